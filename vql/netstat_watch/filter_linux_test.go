//go:build linux

package netstat_watch

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/Velocidex/ordereddict"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
)

// The exclusions are applied on both paths a connection takes: snapshots
// (netlink) and kernel events (ebpf).
var filterBackends = []string{"netlink", "ebpf"}

// listenOn is a server on addr holding each connection until the peer
// closes it, and its port.
func listenOn(t *testing.T, addr string) (net.Listener, uint32) {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	testutil.Serve(ln)
	return ln, uint32(ln.Addr().(*net.TCPAddr).Port)
}

// startWatch starts a watcher and checks it uses the backend asked for.
func startWatch(t *testing.T, ctx context.Context, backend, args string) (<-chan *ordereddict.Dict, *testutil.QueryLog) {
	t.Helper()
	rows, logs := watch(t, ctx, fmt.Sprintf("SELECT * FROM netstat_watch(backend='%s', period=0.1, "+
		"kinds='tcp', listening=FALSE%s)", backend, args))
	if !strings.Contains(logs.String(), "using "+backend) {
		t.Fatalf("backend %s must load here (root, Linux >= 5.8 with BTF): %s", backend, logs)
	}
	time.Sleep(300 * time.Millisecond) // past the baseline
	return rows, logs
}

// TestExcludeNetworks: a connection to 127.0.0.2, in exclude_networks, is
// reported neither added nor removed, while one to 127.0.0.3 is; the
// accepting side of the excluded one (its remote is 127.0.0.1) is kept.
func TestExcludeNetworks(t *testing.T) {
	for _, backend := range filterBackends {
		t.Run(backend, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rows, logs := startWatch(t, ctx, backend, ", exclude_networks=['192.0.2.0/24', '127.0.0.2/32']")
			ln2, port2 := listenOn(t, "127.0.0.2:0")
			ln3, port3 := listenOn(t, "127.0.0.3:0")
			c2, cport2 := startChild(t, "tcp", ln2.Addr().String(), 300*time.Millisecond)
			c3, cport3 := startChild(t, "tcp", ln3.Addr().String(), 300*time.Millisecond)
			c2.Wait()
			c3.Wait()

			ports := map[uint32]bool{uint32(cport2): true, uint32(cport3): true, port2: true, port3: true}
			got := collectFor(ctx, rows, func(r *ordereddict.Dict) bool {
				return ports[get(r, "Laddr.Port").(uint32)]
			}, func(got []*ordereddict.Dict) bool {
				return diffsOf(got, uint32(cport3), port3) == "added,removed" &&
					diffsOf(got, port2, uint32(cport2)) == "added,removed"
			}, time.Second)
			for _, c := range []struct {
				what         string
				lport, rport uint32
				want         string
			}{
				{"to 127.0.0.2 (excluded)", uint32(cport2), port2, ""},
				{"accepted on 127.0.0.2, from 127.0.0.1", port2, uint32(cport2), "added,removed"},
				{"to 127.0.0.3", uint32(cport3), port3, "added,removed"},
				{"accepted on 127.0.0.3", port3, uint32(cport3), "added,removed"},
			} {
				if d := diffsOf(got, c.lport, c.rport); d != c.want {
					t.Errorf("connection %s: rows %q, want %q\n%v\nlogs: %s", c.what, d, c.want, got, logs)
				}
			}
		})
	}
}

// TestExcludePids: with exclude_pids=[this process], this process's own
// connection (both its ends are ours) is not reported; a child process's
// connection to the same listener is, on the child's end (the accepting
// end is ours: dropped too).
func TestExcludePids(t *testing.T) {
	for _, backend := range filterBackends {
		t.Run(backend, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rows, logs := startWatch(t, ctx, backend, fmt.Sprintf(", exclude_pids=[%d, 999999999]", os.Getpid()))
			ln, lport := listenOn(t, "127.0.0.1:0")

			own, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			oport := uint32(own.LocalAddr().(*net.TCPAddr).Port)
			child, cport := startChild(t, "tcp", ln.Addr().String(), 300*time.Millisecond)
			time.Sleep(300 * time.Millisecond)
			own.Close()
			child.Wait()

			ports := map[uint32]bool{uint32(cport): true, oport: true, lport: true}
			got := collectFor(ctx, rows, func(r *ordereddict.Dict) bool {
				return ports[get(r, "Laddr.Port").(uint32)]
			}, func(got []*ordereddict.Dict) bool {
				return diffsOf(got, uint32(cport), lport) == "added,removed"
			}, time.Second)
			if d := diffsOf(got, uint32(cport), lport); d != "added,removed" {
				t.Errorf("child's connection: rows %q, want added,removed\n%v\nlogs: %s", d, got, logs)
			}
			for _, r := range got {
				if get(r, "Pid") == int32(os.Getpid()) {
					t.Errorf("row of an excluded Pid: %v", r)
				}
				if get(r, "Laddr.Port") == oport || get(r, "Raddr.Port") == oport {
					// Our outbound end, and our accepted end of it.
					t.Errorf("row of our own connection: %v", r)
				}
			}
			for _, r := range got {
				if get(r, "Laddr.Port") == uint32(cport) && get(r, "Pid") != int32(child.Process.Pid) {
					t.Errorf("child's row: Pid %v, want %d", get(r, "Pid"), child.Process.Pid)
				}
			}
		})
	}
}

// TestExcludeLoopback: in a network namespace of the test's own, with a
// 10.x address on its lo, a loopback connection yields no row where a
// watcher without exclude_loopback reports it, and a connection between
// 10.x addresses is reported by both. Kernel events see every namespace.
func TestExcludeLoopback(t *testing.T) {
	ns, ino := testutil.Netns(t, "nwfilt")
	const addr = "10.213.0.1"
	if out, err := exec.Command("ip", "netns", "exec", ns, "ip", "addr", "add", addr+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	filtered, flogs := startWatch(t, ctx, "ebpf", ", exclude_loopback=TRUE")
	control, clogs := startWatch(t, ctx, "ebpf", "")

	type conn struct{ cli, srv uint32 }
	connect := func(host string) conn {
		srv, sport := netnsChild(t, ns, "serve", host+":0", "50ms")
		cli, cport := netnsChild(t, ns, "tcp", fmt.Sprintf("%s:%d", host, sport), "50ms")
		cli.Wait()
		srv.Wait()
		return conn{cport, sport}
	}
	lo, ten := connect("127.0.0.1"), connect(addr)

	inNs := func(r *ordereddict.Dict) bool { return get(r, "Netns") == ino }
	complete := func(c conn) func([]*ordereddict.Dict) bool {
		return func(got []*ordereddict.Dict) bool {
			return diffsOf(got, c.cli, c.srv) == "added,removed" && diffsOf(got, c.srv, c.cli) == "added,removed"
		}
	}
	gotF := collectFor(ctx, filtered, inNs, complete(ten), time.Second)
	gotC := collectFor(ctx, control, inNs, complete(lo), time.Second)
	for _, w := range []struct {
		what string
		got  []*ordereddict.Dict
		logs *testutil.QueryLog
		c    conn
		want string
	}{
		{"exclude_loopback, 127.0.0.1", gotF, flogs, lo, ""},
		{"exclude_loopback, " + addr, gotF, flogs, ten, "added,removed"},
		{"control, 127.0.0.1", gotC, clogs, lo, "added,removed"},
		{"control, " + addr, gotC, clogs, ten, "added,removed"},
	} {
		for _, side := range [][2]uint32{{w.c.cli, w.c.srv}, {w.c.srv, w.c.cli}} {
			if d := diffsOf(w.got, side[0], side[1]); d != w.want {
				t.Errorf("%s, local port %d: rows %q, want %q\n%v\nlogs: %s", w.what, side[0], d, w.want, w.got, w.logs)
			}
		}
	}
}
