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
// closes it; it returns its "ip:port".
func listenOn(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	testutil.Serve(ln)
	return ln.Addr().String()
}

// either matches the rows about any of the given local endpoints.
func either(locals ...string) func(*ordereddict.Dict) bool {
	return func(r *ordereddict.Dict) bool {
		l := endpoint(r, "Laddr")
		for _, e := range locals {
			if l == e {
				return true
			}
		}
		return false
	}
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
			srv2, srv3 := listenOn(t, "127.0.0.2:0"), listenOn(t, "127.0.0.3:0")
			c2, cport2 := startChild(t, "tcp", srv2, 300*time.Millisecond)
			c3, cport3 := startChild(t, "tcp", srv3, 300*time.Millisecond)
			c2.Wait()
			c3.Wait()
			// Connecting to 127.0.0.x, the kernel binds 127.0.0.1.
			cli2, cli3 := hostPort("127.0.0.1", cport2), hostPort("127.0.0.1", cport3)

			got := collectFor(ctx, rows, either(cli2, cli3, srv2, srv3), func(got []*ordereddict.Dict) bool {
				return diffsOf(got, cli3, srv3) == "added,removed" && diffsOf(got, srv2, cli2) == "added,removed"
			}, time.Second)
			for _, c := range []struct {
				what          string
				local, remote string
				want          string
			}{
				{"to 127.0.0.2 (excluded)", cli2, srv2, ""},
				{"accepted on 127.0.0.2, from 127.0.0.1", srv2, cli2, "added,removed"},
				{"to 127.0.0.3", cli3, srv3, "added,removed"},
				{"accepted on 127.0.0.3", srv3, cli3, "added,removed"},
			} {
				if d := diffsOf(got, c.local, c.remote); d != c.want {
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
			srv := listenOn(t, "127.0.0.1:0")
			own, err := net.Dial("tcp4", srv)
			if err != nil {
				t.Fatal(err)
			}
			ownCli := own.LocalAddr().String()
			// Held long enough for a polling snapshot to see both with
			// their owner on a loaded machine (one seen only as a
			// TIME_WAIT remnant has Pid -1, and is kept).
			child, cport := startChild(t, "tcp", srv, time.Second)
			time.Sleep(time.Second)
			own.Close()
			child.Wait()
			cli := hostPort("127.0.0.1", cport)

			got := collectFor(ctx, rows, either(cli, ownCli, srv), func(got []*ordereddict.Dict) bool {
				return diffsOf(got, cli, srv) == "added,removed"
			}, time.Second)
			if d := diffsOf(got, cli, srv); d != "added,removed" {
				t.Errorf("child's connection: rows %q, want added,removed\n%v\nlogs: %s", d, got, logs)
			}
			for _, r := range got {
				if get(r, "Pid") == int32(os.Getpid()) {
					t.Errorf("row of an excluded Pid: %v", r)
				}
				if l, rem := endpoint(r, "Laddr"), endpoint(r, "Raddr"); l == ownCli || rem == ownCli {
					// Our outbound end, and our accepted end of it.
					t.Errorf("row of our own connection: %v", r)
				}
				if endpoint(r, "Laddr") == cli && get(r, "Pid") != int32(child.Process.Pid) {
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

	type conn struct{ cli, srv string }
	connect := func(host string) conn {
		srv, sport := netnsChild(t, ns, "serve", host+":0", "50ms")
		cli, cport := netnsChild(t, ns, "tcp", hostPort(host, sport), "50ms")
		cli.Wait()
		srv.Wait()
		return conn{hostPort(host, cport), hostPort(host, sport)}
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
		for _, side := range [][2]string{{w.c.cli, w.c.srv}, {w.c.srv, w.c.cli}} {
			if d := diffsOf(w.got, side[0], side[1]); d != w.want {
				t.Errorf("%s, local %s: rows %q, want %q\n%v\nlogs: %s", w.what, side[0], d, w.want, w.got, w.logs)
			}
		}
	}
}
