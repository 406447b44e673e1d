package deploy

import (
	"net"
	"reflect"
	"testing"
)

func TestPickPortsAvoidsTakenAndDuplicates(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port

	free, err := FreePort(taken)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PickPorts(Ports{Frontend: taken, API: free, GUI: free, Monitoring: 0})
	if err != nil {
		t.Fatal(err)
	}
	if p.Frontend == taken {
		t.Errorf("taken port %d picked", taken)
	}
	if p.API != free {
		t.Errorf("free preferred port %d not kept: %d", free, p.API)
	}
	seen := map[int]bool{}
	for _, port := range []int{p.Frontend, p.API, p.GUI, p.Monitoring} {
		if port <= 0 || seen[port] {
			t.Errorf("ports %+v: %d zero or repeated", p, port)
		}
		seen[port] = true
	}
}

func TestDeepMerge(t *testing.T) {
	a := map[string]any{"GUI": map[string]any{"bind_port": 1, "x": "a"}, "k": 1}
	b := map[string]any{"GUI": map[string]any{"bind_port": 2, "y": "b"}, "n": []int{1}}
	got := deepMerge(a, b)
	want := map[string]any{"GUI": map[string]any{"bind_port": 2, "x": "a", "y": "b"}, "k": 1, "n": []int{1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("deepMerge = %v, want %v", got, want)
	}
}
