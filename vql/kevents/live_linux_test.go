//go:build linux

package kevents

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
	"github.com/netwatch-dfir/netwatch/vql/collector"
)

// The test binary doubles as the short-lived processes whose connections
// must be attributed to them: a real process that exits at once.
func TestMain(m *testing.M) {
	switch os.Getenv("KEVENTS_HELPER") {
	case "connect":
		helperConnect(os.Args[1])
	case "serve":
		helperServe(os.Args[1])
	case "open":
		_, err := Open(Options{})
		fmt.Println("OPEN", err)
		os.Exit(0)
	default:
		os.Exit(m.Run())
	}
}

// helperConnect connects to addr, holds the connection 5 ms and exits.
func helperConnect(addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println(c.LocalAddr().(*net.TCPAddr).Port)
	time.Sleep(5 * time.Millisecond)
	c.Close()
	os.Exit(0)
}

// helperServe listens on addr, prints the port, accepts one connection,
// holds it 5 ms and exits.
func helperServe(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	c, err := ln.Accept()
	if err != nil {
		os.Exit(1)
	}
	time.Sleep(5 * time.Millisecond)
	c.Close()
	os.Exit(0)
}

// open loads the programs; not being able to is a failure, not a skip: CI
// runs as root on the kind of kernel netwatch targets.
func open(t *testing.T, opts Options) *Source {
	t.Helper()
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("kernel events must load on this machine (root, Linux >= 5.8 with BTF): %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// child runs this binary as a helper, in netns when not "", and returns it
// with the port it printed.
func child(t *testing.T, netns, mode, addr string) (*exec.Cmd, uint16) {
	t.Helper()
	var cmd *exec.Cmd
	if netns != "" {
		cmd = exec.Command("ip", "netns", "exec", netns, os.Args[0], addr)
	} else {
		cmd = exec.Command(os.Args[0], addr)
	}
	cmd.Env = append(os.Environ(), "KEVENTS_HELPER="+mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	port, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		cmd.Wait()
		t.Fatalf("helper %s: %q %v", mode, line, err)
	}
	go io.Copy(io.Discard, r)
	return cmd, uint16(port)
}

// gather reads events until want is satisfied or the time is up.
func gather(ctx context.Context, ch <-chan []Event, keep func(*Event) bool, done func([]Event) bool) []Event {
	var got []Event
	for {
		select {
		case b, ok := <-ch:
			if !ok {
				return got
			}
			for i := range b {
				if keep(&b[i]) {
					got = append(got, b[i])
				}
			}
			if done(got) {
				return got
			}
		case <-ctx.Done():
			return got
		}
	}
}

// TestShortConnectionsFromChildren: a 5 ms outbound and a 5 ms inbound
// connection, each made by a child process that exits at once, carry the
// child's pid and name where the child's own syscall ran, in this network
// namespace and in another one.
func TestShortConnectionsFromChildren(t *testing.T) {
	s := open(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch := s.Stream(ctx)
	self, err := SelfNetns()
	if err != nil {
		t.Fatal(err)
	}
	comm := filepath.Base(os.Args[0])
	if len(comm) > 15 {
		comm = comm[:15]
	}

	for _, tc := range []struct {
		name  string
		netns bool
	}{{"host", false}, {"netns", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ns, inode := "", self
			if tc.netns {
				ns, inode = testutil.Netns(t, "nwkev")
			}
			// Outbound: this process listens (in the namespace, through
			// a helper when there is one), a child connects.
			srv, sport := child(t, ns, "serve", "127.0.0.1:0")
			cli, cport := child(t, ns, "connect", fmt.Sprintf("127.0.0.1:%d", sport))
			cli.Wait()
			srv.Wait()

			// A socket's last records lose its local port (unhashed):
			// follow the cookies seen with the listener's port.
			cookies := map[uint64]bool{}
			ours := func(e *Event) bool {
				if e.Kind == Exec || e.Sock.Netns != inode {
					return false
				}
				if e.Sock.Local.Port() == sport || e.Sock.Remote.Port() == sport {
					cookies[e.Sock.Cookie] = true
				}
				return cookies[e.Sock.Cookie]
			}
			done := func(got []Event) bool {
				var conn, acc, closes int
				for _, e := range got {
					switch {
					case e.Kind == Accept:
						acc++
					case e.Sock.Old == collector.StateClose && e.Sock.New == collector.StateSynSent:
						conn++
					case e.Sock.New == collector.StateClose && e.Sock.Old != collector.StateListen:
						closes++
					}
				}
				return conn > 0 && acc > 0 && closes >= 2
			}
			got := gather(ctx, ch, ours, done)
			if !done(got) {
				t.Fatalf("events of the two 5 ms connections incomplete: %+v", got)
			}
			byPid := map[string]int32{"client": int32(cli.Process.Pid), "server": int32(srv.Process.Pid)}
			var sawConnect, sawAccept bool
			for _, e := range got {
				if !e.ByOwner() {
					continue
				}
				want := byPid["server"]
				if e.Kind == State && e.Sock.New == collector.StateSynSent ||
					e.Kind == State && e.Sock.Local.Port() == cport {
					want = byPid["client"]
				}
				if e.Task.Pid != want || e.Task.Comm != comm {
					t.Errorf("%v %v->%v %v %v: task %d %q, want %d %q", e.Kind, e.Sock.Old, e.Sock.New,
						e.Sock.Local, e.Sock.Remote, e.Task.Pid, e.Task.Comm, want, comm)
				}
				if e.Sock.Cookie == 0 {
					t.Errorf("%v record without a cookie", e.Kind)
				}
				switch {
				case e.Kind == Accept:
					sawAccept = true
					if e.Sock.Remote != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), cport) {
						t.Errorf("accept's remote %v, want port %d", e.Sock.Remote, cport)
					}
				case e.Sock.New == collector.StateSynSent:
					sawConnect = true
				}
				if e.Task.Start == 0 || e.Task.Ppid == 0 {
					t.Errorf("task facts missing: %+v", e.Task)
				}
			}
			if !sawConnect || !sawAccept {
				t.Errorf("connect seen %v, accept seen %v", sawConnect, sawAccept)
			}
		})
	}
}

// TestExecRecords: an exec is seen with its path and arguments.
func TestExecRecords(t *testing.T) {
	s := open(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := s.Stream(ctx)
	cmd := exec.Command("/bin/true", "kevents-exec-test")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := int32(cmd.Process.Pid)
	got := gather(ctx, ch, func(e *Event) bool { return e.Kind == Exec && e.Task.Pid == pid },
		func(g []Event) bool { return len(g) > 0 })
	if len(got) != 1 {
		t.Fatalf("exec of pid %d: %+v", pid, got)
	}
	e := got[0]
	if e.Filename != "/bin/true" || string(e.Cmdline) != "/bin/true\x00kevents-exec-test\x00" || e.Task.Comm != "true" {
		t.Errorf("exec record %q %q comm %q", e.Filename, e.Cmdline, e.Task.Comm)
	}
}

// TestDropsCounted: with a one-page ring buffer that nobody reads for a
// while, a burst of connections overflows it and the drops are counted.
func TestDropsCounted(t *testing.T) {
	s := open(t, Options{RingSize: os.Getpagesize(), Coalesce: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := s.Stream(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	const n = 200 // ~10 records each, against room for ~35
	for range n {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
		}
	}
	var total uint64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		perCPU, err := s.Drops()
		if err != nil {
			t.Fatal(err)
		}
		total = 0
		for _, d := range perCPU {
			total += d
		}
		if total > 0 {
			break
		}
	}
	if total == 0 {
		t.Fatal("no drops counted after overflowing a one-page ring buffer")
	}
	t.Logf("%d records dropped", total)
	cancel()
	for range ch {
	}
}

// kernelObjects lists the BPF programs, maps and links the kernel holds.
func kernelObjects(t *testing.T) (progs []ebpf.ProgramID, maps []ebpf.MapID, links []link.ID) {
	t.Helper()
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		progs, id = append(progs, next), next
	}
	for id := ebpf.MapID(0); ; {
		next, err := ebpf.MapGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		maps, id = append(maps, next), next
	}
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		links = append(links, it.ID)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return progs, maps, links
}

// TestCloseLeavesNothing: once the stream's context ends and the source
// is closed, the kernel holds none of its programs, maps or links, and the
// reading goroutine has ended (its channel is closed).
func TestCloseLeavesNothing(t *testing.T) {
	s, err := Open(Options{})
	if err != nil {
		t.Fatalf("kernel events must load here: %v", err)
	}
	progs, maps, links := kernelObjects(t)
	var ourProgs []ebpf.ProgramID
	for _, p := range []*ebpf.Program{s.objs.OnSetState, s.objs.OnSysExit, s.objs.OnExec} {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		ourProgs = append(ourProgs, id)
	}
	var ourMaps []ebpf.MapID
	for _, m := range []*ebpf.Map{s.objs.Events, s.objs.Drops} {
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		ourMaps = append(ourMaps, id)
	}
	var ourLinks []link.ID
	for _, l := range s.links {
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		ourLinks = append(ourLinks, info.ID)
	}
	for _, p := range ourProgs {
		if !slices.Contains(progs, p) {
			t.Fatalf("program %d not listed by the kernel: %v", p, progs)
		}
	}
	for _, m := range ourMaps {
		if !slices.Contains(maps, m) {
			t.Fatalf("map %d not listed by the kernel: %v", m, maps)
		}
	}
	for _, l := range ourLinks {
		if !slices.Contains(links, l) {
			t.Fatalf("link %d not listed by the kernel: %v", l, links)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Stream(ctx)
	cancel()
	select {
	case _, ok := <-ch:
		for ok {
			_, ok = <-ch
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream goroutine did not end with its context")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Freed asynchronously by the kernel (RCU): wait a little.
	left := func() (n int) {
		progs, maps, links := kernelObjects(t)
		for _, p := range ourProgs {
			if slices.Contains(progs, p) {
				n++
			}
		}
		for _, m := range ourMaps {
			if slices.Contains(maps, m) {
				n++
			}
		}
		for _, l := range ourLinks {
			if slices.Contains(links, l) {
				n++
			}
		}
		return n
	}
	for range 50 {
		if left() == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	progs, maps, links = kernelObjects(t)
	t.Errorf("after Close the kernel still lists some of programs %v, maps %v, links %v: %v %v %v",
		ourProgs, ourMaps, ourLinks, progs, maps, links)
}

// TestRefusedWithoutPrivileges: a process without CAP_BPF, CAP_PERFMON and
// CAP_SYS_ADMIN gets an error that says so (the caller falls back).
func TestRefusedWithoutPrivileges(t *testing.T) {
	cmd := exec.Command("setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin",
		"--inh-caps=-all", os.Args[0])
	cmd.Env = append(os.Environ(), "KEVENTS_HELPER=open")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("setpriv: %v %s", err, out)
	}
	if !strings.Contains(string(out), "OPEN ") || strings.Contains(string(out), "OPEN <nil>") ||
		!strings.Contains(string(out), "CAP_BPF") {
		t.Errorf("without capabilities: %s", out)
	}
}
