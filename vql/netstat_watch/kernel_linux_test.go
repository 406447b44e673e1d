//go:build linux

package netstat_watch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Velocidex/ordereddict"
	"github.com/cilium/ebpf"
	"go.uber.org/goleak"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
)

// netnsChild runs a helper of this binary in the network namespace netns
// ("" for this one) and returns it with the port it printed.
func netnsChild(t *testing.T, netns, mode string, args ...string) (*exec.Cmd, uint32) {
	t.Helper()
	argv := append([]string{os.Args[0]}, args...)
	if netns != "" {
		argv = append([]string{"ip", "netns", "exec", netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NETWATCH_HELPER="+mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	line, _ := r.ReadString('\n')
	port, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		cmd.Wait()
		t.Fatalf("helper %s: %q", mode, line)
	}
	go io.Copy(io.Discard, r)
	return cmd, uint32(port)
}

// TestKernelEventsShortConnections: with kernel events, a 5 ms outbound and
// a 5 ms inbound connection, each made by a child process that exits at
// once, are reported once added and once removed with the child's Pid and
// Name, here and in another network namespace (Netns). Kernel events
// must load here: CI runs as root on the kernels netwatch targets.
func TestKernelEventsShortConnections(t *testing.T) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var selfIno uint32
	fmt.Sscanf(self, "net:[%d]", &selfIno)
	name := filepath.Base(os.Args[0])

	for _, tc := range []struct {
		name  string
		netns bool
	}{{"host", false}, {"netns", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ns, ino := "", selfIno
			if tc.netns {
				ns, ino = testutil.Netns(t, "nwtest")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rows, logs := watch(t, ctx, "SELECT * FROM netstat_watch(backend='ebpf', kinds='tcp', listening=FALSE)")
			if !strings.Contains(logs.String(), "using ebpf") {
				t.Fatalf("kernel events must load here (root, Linux >= 5.8 with BTF): %s", logs)
			}
			srv, sport := netnsChild(t, ns, "serve", "127.0.0.1:0", "5ms")
			cli, cport := netnsChild(t, ns, "tcp", fmt.Sprintf("127.0.0.1:%d", sport), "5ms")
			cli.Wait()
			srv.Wait()

			got := collectFor(ctx, rows, func(r *ordereddict.Dict) bool {
				l, rp := get(r, "Laddr.Port"), get(r, "Raddr.Port")
				return get(r, "Netns") == ino && (l == cport && rp == sport || l == sport && rp == cport)
			}, func(got []*ordereddict.Dict) bool { return len(got) >= 4 }, 500*time.Millisecond)

			for _, side := range []struct {
				port      uint32
				pid       int
				direction string
			}{{cport, cli.Process.Pid, "outbound"}, {sport, srv.Process.Pid, "inbound"}} {
				var diffs []string
				for _, r := range got {
					if get(r, "Laddr.Port") != side.port {
						continue
					}
					diffs = append(diffs, get(r, "Diff").(string))
					if get(r, "Pid") != int32(side.pid) || get(r, "ProcInfo.Data.Name") != name ||
						get(r, "Direction") != side.direction {
						t.Errorf("%s row: Pid %v Name %v Direction %v, want %d %s %s", side.direction,
							get(r, "Pid"), get(r, "ProcInfo.Data.Name"), get(r, "Direction"), side.pid, name, side.direction)
					}
					if exe, _ := get(r, "ProcInfo.Data.Exe").(string); exe != os.Args[0] {
						t.Errorf("%s row: Exe %q (the process is gone: from the exec event), want %s", side.direction, exe, os.Args[0])
					}
				}
				if strings.Join(diffs, ",") != "added,removed" {
					t.Errorf("%s connection: rows %v, want added,removed\n%v\nlogs: %s", side.direction, diffs, got, logs)
				}
			}
		})
	}
}

// TestKernelEventsOtherNamespaces: connections in a container's network
// namespace that were open before the watch started (no event will ever
// tell of them until they end) are found by the reconciling snapshot of
// that namespace, TCP and UDP, with their owner and Netns, as Existing.
func TestKernelEventsOtherNamespaces(t *testing.T) {
	ns, ino := testutil.Netns(t, "nwpod")
	srv, sport := netnsChild(t, ns, "serve", "127.0.0.1:0", "30s")
	cli, cport := netnsChild(t, ns, "tcp", fmt.Sprintf("127.0.0.1:%d", sport), "30s")
	udp, uport := netnsChild(t, ns, "udp", "127.0.0.1:9", "30s")
	for _, c := range []*exec.Cmd{srv, cli, udp} {
		defer c.Wait()
		defer c.Process.Kill()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rows, logs := watch(t, ctx, "SELECT * FROM netstat_watch(backend='ebpf', kinds=['tcp','udp'], "+
		"listening=FALSE, emit_existing=TRUE, reconcile=1)")
	if !strings.Contains(logs.String(), "using ebpf") {
		t.Fatalf("kernel events must load here: %s", logs)
	}
	want := map[uint32]struct {
		pid       int
		typ       string
		direction string
	}{cport: {cli.Process.Pid, "TCP", "outbound"}, sport: {srv.Process.Pid, "TCP", "inbound"},
		uport: {udp.Process.Pid, "UDP", "outbound"}}
	got := collectFor(ctx, rows, func(r *ordereddict.Dict) bool {
		_, ok := want[get(r, "Laddr.Port").(uint32)]
		return ok && get(r, "Netns") == ino
	}, func(got []*ordereddict.Dict) bool { return len(got) >= len(want) }, time.Second)

	name := filepath.Base(os.Args[0])
	seen := map[uint32]int{}
	for _, r := range got {
		port := get(r, "Laddr.Port").(uint32)
		w := want[port]
		seen[port]++
		if get(r, "Diff") != "added" || get(r, "Existing") != true || get(r, "Pid") != int32(w.pid) ||
			get(r, "ProcInfo.Data.Name") != name || get(r, "TypeString") != w.typ || get(r, "Direction") != w.direction {
			t.Errorf("port %d: %v %v Existing=%v Pid=%v Name=%v Direction=%v, want added %s Existing Pid %d %s %s",
				port, get(r, "Diff"), get(r, "TypeString"), get(r, "Existing"), get(r, "Pid"),
				get(r, "ProcInfo.Data.Name"), get(r, "Direction"), w.typ, w.pid, name, w.direction)
		}
	}
	for port := range want {
		if seen[port] != 1 {
			t.Errorf("port %d in namespace %d: %d rows, want 1\nrows: %v\nlogs: %s", port, ino, seen[port], got, logs)
		}
	}
}

// TestKernelEventsDropsReconciled: a ring buffer of one page overflows
// with a burst of connections; the drops are logged, and the reconciling
// snapshot reports the connections whose records were lost: each once,
// none twice.
func TestKernelEventsDropsReconciled(t *testing.T) {
	ln := loopbackServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// emit_existing: the start line comes before the first snapshot, which
	// (now reading every namespace) can take long enough on a busy host for
	// part of the burst to be in it; without it those would be its silent
	// baseline, never reported, and look lost.
	rows, logs, ended := watchWith(t, ctx, NetstatWatchPlugin{},
		"SELECT * FROM netstat_watch(backend='ebpf', kinds='tcp', listening=FALSE, ring_size=4, reconcile=1, emit_existing=TRUE)")
	if !strings.Contains(logs.String(), "using ebpf") {
		t.Fatalf("kernel events must load here: %s", logs)
	}

	const n = 300
	conns := make([]net.Conn, 0, n)
	ports := map[uint32]int{}
	for range n {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		ports[uint32(c.LocalAddr().(*net.TCPAddr).Port)] = 0
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	added := 0
	seen := map[uint32][]string{} // the added rows of each port, for the failure message
	// One of the burst's: its local port and the listener's. (A local port
	// alone is not one: any other program's connection can have it.)
	ours := func(r *ordereddict.Dict) (uint32, bool) {
		p, _ := get(r, "Laddr.Port").(uint32)
		_, ok := ports[p]
		return p, ok && get(r, "Diff") == "added" && get(r, "Raddr.Port") == uint32(ln.Addr().(*net.TCPAddr).Port)
	}
	deadline := time.After(8 * time.Second)
	for added < n {
		select {
		case r := <-rows:
			if p, ok := ours(r); ok {
				ports[p]++
				seen[p] = append(seen[p], fmt.Sprint(r))
				if ports[p] == 1 {
					added++
				}
			}
		case <-deadline:
			t.Fatalf("%d of %d connections reported after 8 s\nlogs: %s", added, n, logs)
		}
	}
	// A while longer: a second snapshot must not report them again.
	quiet := time.After(1500 * time.Millisecond)
	for done := false; !done; {
		select {
		case r := <-rows:
			if p, ok := ours(r); ok {
				ports[p]++
				seen[p] = append(seen[p], fmt.Sprint(r))
			}
		case <-quiet:
			done = true
		}
	}
	for p, k := range ports {
		if k != 1 {
			t.Errorf("port %d: %d added rows: %v", p, k, seen[p])
		}
	}
	cancel()
	waitPluginEnd(t, ended)
	l := logs.String()
	if !strings.Contains(l, "ring buffer was full") || strings.Contains(l, ", 0 dropped") {
		t.Errorf("drops not reported:\n%s", l)
	}
}

// TestKernelEventsFallback: a process that may not load BPF programs
// polls instead with backend=auto, saying why in its start line, and fails
// with backend=ebpf.
func TestKernelEventsFallback(t *testing.T) {
	for _, tc := range []struct {
		query, want string
	}{
		{"SELECT * FROM netstat_watch(kinds='tcp')", "every 1s using netlink; kernel events unavailable: "},
		{"SELECT * FROM netstat_watch(kinds='tcp', backend='ebpf')", "backend=ebpf: kernel events unavailable: "},
	} {
		cmd := exec.Command("setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin", "--inh-caps=-all",
			os.Args[0], tc.query)
		cmd.Env = append(os.Environ(), "NETWATCH_HELPER=watch")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.query, err, out)
		}
		if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "CAP_BPF") {
			t.Errorf("%s without CAP_BPF/CAP_SYS_ADMIN: want %q in\n%s", tc.query, tc.want, out)
		}
	}
}

// TestKernelEventsCancel: when the query ends, no BPF program of ours is
// left in the kernel and no goroutine of the plugin or of kevents runs.
func TestKernelEventsCancel(t *testing.T) {
	// Every goroutine started from here on (the plugin's, the kernel
	// event reader's) must be gone at the end: goleak fails closed.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	rows, logs, ended := watchWith(t, ctx, NetstatWatchPlugin{}, "SELECT * FROM netstat_watch(backend='ebpf')")
	if !strings.Contains(logs.String(), "using ebpf") {
		t.Fatalf("kernel events must load here: %s", logs)
	}
	if ours := ourPrograms(t); ours == 0 {
		t.Fatal("no program of ours listed while running")
	}
	cancel()
	for range rows {
	}
	waitPluginEnd(t, ended)
	deadline := time.Now().Add(5 * time.Second)
	for ourPrograms(t) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the query ended: %d programs still loaded", ourPrograms(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ourPrograms counts the kernel's BPF programs named as ours. Other
// watchers may run in other test binaries; the tests of this package do
// not overlap.
func ourPrograms(t *testing.T) int {
	t.Helper()
	n := 0
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return n
		} else if err != nil {
			t.Fatal(err)
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		if info, err := p.Info(); err == nil && (info.Name == "on_set_state" || info.Name == "on_sys_exit") &&
			programOwnedBy(id, os.Getpid()) {
			n++
		}
		p.Close()
	}
}

// programOwnedBy: some process's fd refers to the program; only ours is
// checked, the fd we just opened ourselves aside, so a watcher of another
// test binary does not count.
func programOwnedBy(id ebpf.ProgramID, pid int) bool {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fdinfo", pid))
	count := 0
	for _, fd := range fds {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		if err == nil && strings.Contains(string(b), fmt.Sprintf("prog_id:\t%d\n", id)) {
			count++
		}
	}
	return count > 1
}
