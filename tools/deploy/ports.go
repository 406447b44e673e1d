package deploy

import (
	"context"
	"fmt"
	"net"
	"time"
)

// PortFree tells whether port can be bound on 127.0.0.1 now.
func PortFree(port int) bool {
	if port <= 0 || port > 65535 {
		return false
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// FreePort returns a port the kernel considers free on 127.0.0.1, other
// than those in avoid.
func FreePort(avoid ...int) (int, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !contains(avoid, port) {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port on 127.0.0.1")
}

// PickPort returns preferred when it is free (and not in avoid), else
// another free port.
func PickPort(preferred int, avoid ...int) (int, error) {
	if preferred > 0 && !contains(avoid, preferred) && PortFree(preferred) {
		return preferred, nil
	}
	return FreePort(avoid...)
}

// PickPorts replaces each taken or zero port of preferred by a free one;
// the four are distinct.
func PickPorts(preferred Ports) (Ports, error) {
	var p Ports
	var used []int
	for _, f := range []struct {
		want int
		set  *int
	}{
		{preferred.Frontend, &p.Frontend},
		{preferred.API, &p.API},
		{preferred.GUI, &p.GUI},
		{preferred.Monitoring, &p.Monitoring},
	} {
		port, err := PickPort(f.want, used...)
		if err != nil {
			return p, err
		}
		*f.set = port
		used = append(used, port)
	}
	return p, nil
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// exactPorts checks that the four ports of want are set, distinct and
// free, waiting a little for ports a server that just stopped may still
// hold, and returns them unchanged.
func exactPorts(ctx context.Context, want Ports) (Ports, error) {
	list := []int{want.Frontend, want.API, want.GUI, want.Monitoring}
	for i, p := range list {
		if p <= 0 || contains(list[:i], p) {
			return want, fmt.Errorf("deploy: ExactPorts needs four distinct ports, got %+v", want)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range list {
		for !PortFree(p) {
			if time.Now().After(deadline) {
				return want, fmt.Errorf("deploy: port %d of %+v is taken", p, want)
			}
			select {
			case <-ctx.Done():
				return want, ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return want, nil
}
