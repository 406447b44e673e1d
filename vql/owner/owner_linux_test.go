//go:build linux

package owner

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
	"github.com/netwatch-dfir/netwatch/vql/collector"
)

// The test binary doubles as the process under inspection: with this
// variable set it runs a helper instead of the tests.
const helperEnv = "NETWATCH_OWNER_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "hold":
		holdConnection(os.Getenv("NETWATCH_OWNER_ADDR"))
	case "resolve":
		resolveAsHelper(os.Getenv("NETWATCH_OWNER_INODE"))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper")
		os.Exit(2)
	}
}

// holdConnection connects to addr, prints the socket's inode and holds the
// connection until stdin is closed.
func holdConnection(addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ino, err := socketInode(c.(syscall.Conn))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ino)
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// resolveAsHelper resolves its own listener and the given inode over /proc,
// and prints the two PIDs and the number of processes it was denied.
func resolveAsHelper(inode string) {
	ino, _ := strconv.ParseUint(inode, 10, 64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	own, err := socketInode(ln.(syscall.Conn))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r := New("/proc")
	socks := []collector.Socket{{Inode: own}, {Inode: ino}}
	r.Resolve(socks)
	fmt.Println(socks[0].Pid, socks[1].Pid, r.Stats().Denied)
	os.Exit(0)
}

func socketInode(c syscall.Conn) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return 0, err
	}
	return st.Ino, serr
}

func inodeOf(tb testing.TB, c any) uint64 {
	tb.Helper()
	ino, err := socketInode(c.(syscall.Conn))
	if err != nil {
		tb.Fatal(err)
	}
	return ino
}

func listen(tb testing.TB) *net.TCPListener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// loopbackSockets opens pairs connected pairs on 127.0.0.1 and returns
// the 2*pairs sockets, plus the listener's, as a collector would.
func loopbackSockets(tb testing.TB, pairs int) []collector.Socket {
	tb.Helper()
	ln := listen(tb)
	socks := []collector.Socket{{Inode: inodeOf(tb, ln), Pid: -1}}
	for range pairs {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		s, err := ln.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		socks = append(socks,
			collector.Socket{Inode: inodeOf(tb, c), Pid: -1},
			collector.Socket{Inode: inodeOf(tb, s), Pid: -1})
	}
	return socks
}

func checkPids(t *testing.T, socks []collector.Socket, want int) {
	t.Helper()
	for i, s := range socks {
		if int(s.Pid) != want {
			t.Errorf("socks[%d] (inode %d): Pid = %d, want %d", i, s.Inode, s.Pid, want)
		}
	}
}

func TestResolveOwnSockets(t *testing.T) {
	socks := loopbackSockets(t, 3)
	r := New("/proc")
	r.Resolve(socks)
	checkPids(t, socks, os.Getpid())
	st := r.Stats()
	if st.Scans != 1 || st.Cached != len(socks) || st.Unresolved != 0 {
		t.Errorf("Stats = %+v; want 1 scan, %d cached, 0 unresolved", st, len(socks))
	}

	// All cached now: no more work, whatever the collector put in Pid.
	for i := range socks {
		socks[i].Pid = 12345
	}
	r.Resolve(socks)
	checkPids(t, socks, os.Getpid())
	if st2 := r.Stats(); st2.Scans != st.Scans || st2.Processes != st.Processes || st2.Readlinks != st.Readlinks {
		t.Errorf("cache hit did work: before %+v, after %+v", st, st2)
	}
}

func TestResolveManyNewOneScan(t *testing.T) {
	socks := loopbackSockets(t, 100)
	r := New("/proc")
	r.Resolve(socks)
	checkPids(t, socks, os.Getpid())
	if st := r.Stats(); st.Scans != 1 {
		t.Errorf("Scans = %d for %d new sockets, want 1", st.Scans, len(socks))
	}
}

func TestResolveNoInode(t *testing.T) {
	r := New("/proc")
	socks := []collector.Socket{{Inode: 0, Pid: 42, Orphan: true}}
	r.Resolve(socks)
	if socks[0].Pid != -1 {
		t.Errorf("Pid = %d, want -1", socks[0].Pid)
	}
	if st := r.Stats(); st.Scans != 0 || st.Cached != 0 {
		t.Errorf("Stats = %+v, want no scan and nothing cached", st)
	}
}

func TestResolveChild(t *testing.T) {
	ln := listen(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=hold", "NETWATCH_OWNER_ADDR="+ln.Addr().String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	childIno, err := strconv.ParseUint(line[:len(line)-1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	r := New("/proc")
	socks := []collector.Socket{{Inode: childIno}, {Inode: inodeOf(t, s)}, {Inode: inodeOf(t, ln)}}
	r.Resolve(socks)
	if int(socks[0].Pid) != cmd.Process.Pid {
		t.Errorf("child's socket: Pid = %d, want %d", socks[0].Pid, cmd.Process.Pid)
	}
	checkPids(t, socks[1:], os.Getpid())
	if st := r.Stats(); st.Scans != 1 {
		t.Errorf("Scans = %d, want 1", st.Scans)
	}
}

func TestResolveGivesUp(t *testing.T) {
	socks := loopbackSockets(t, 1)
	const missing = 1<<62 + 12345 // no such socket
	r := New("/proc")
	for call := 1; call <= 6; call++ {
		all := append([]collector.Socket{{Inode: missing}}, socks...)
		r.Resolve(all)
		if all[0].Pid != -1 {
			t.Fatalf("call %d: Pid = %d for a missing inode", call, all[0].Pid)
		}
		checkPids(t, all[1:], os.Getpid())
		st := r.Stats()
		// The first call finds the real sockets and misses the missing
		// one; the next two retry it; then it is left alone.
		wantScans, wantUnresolved := uint64(min(call, 3)), 0
		if call >= 3 {
			wantUnresolved = 1
		}
		if st.Scans != wantScans || st.Unresolved != wantUnresolved {
			t.Fatalf("call %d: Scans = %d, Unresolved = %d; want %d, %d",
				call, st.Scans, st.Unresolved, wantScans, wantUnresolved)
		}
	}
}

func TestResolvePrunes(t *testing.T) {
	socks := loopbackSockets(t, 5)
	r := New("/proc")
	r.Resolve(socks)
	r.Resolve(socks[:3])
	if st := r.Stats(); st.Cached != 3 {
		t.Errorf("Cached = %d after resolving 3 sockets, want 3", st.Cached)
	}
	// A pruned inode is new again.
	r.Resolve(socks)
	checkPids(t, socks, os.Getpid())
	if st := r.Stats(); st.Scans != 2 || st.Cached != len(socks) {
		t.Errorf("Stats = %+v; want 2 scans, %d cached", st, len(socks))
	}
}

// TestResolveDenied runs the resolver as nobody, who may not read the fds
// of this (root) process.
func TestResolveDenied(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a helper as another user")
	}
	bin := testutil.WorldReadableTestBinary(t, "owner.test")

	ln := listen(t)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=resolve",
		"NETWATCH_OWNER_INODE="+strconv.FormatUint(inodeOf(t, ln), 10))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var ownPid, rootPid, denied int
	if _, err := fmt.Sscan(string(out), &ownPid, &rootPid, &denied); err != nil {
		t.Fatalf("helper said %q: %v", out, err)
	}
	t.Logf("as nobody: denied %d processes", denied)
	if ownPid != cmd.Process.Pid || rootPid != -1 || denied < 1 {
		t.Errorf("as nobody: own socket Pid %d (want %d), root's socket Pid %d (want -1), Denied %d (want > 0)",
			ownPid, cmd.Process.Pid, rootPid, denied)
	}
}

// fakeProc is a procRoot of plain directories and symlinks, for tests of
// the scan order.
type fakeProc struct {
	tb   testing.TB
	root string
}

func newFakeProc(tb testing.TB) fakeProc { return fakeProc{tb, tb.TempDir()} }

// add gives pid an fd for each link target.
func (f fakeProc) add(pid int, targets ...string) {
	dir := filepath.Join(f.root, strconv.Itoa(pid), "fd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.tb.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		f.tb.Fatal(err)
	}
	for i, target := range targets {
		if err := os.Symlink(target, filepath.Join(dir, strconv.Itoa(len(ents)+i))); err != nil {
			f.tb.Fatal(err)
		}
	}
}

func sock(inode uint64) string { return fmt.Sprintf("socket:[%d]", inode) }

func (r *Resolver) visits(tb testing.TB, inodes ...uint64) uint64 {
	tb.Helper()
	before := r.Stats()
	socks := make([]collector.Socket, len(inodes))
	for i, ino := range inodes {
		socks[i].Inode = ino
	}
	r.Resolve(socks)
	for _, s := range socks {
		if s.Pid < 0 {
			tb.Fatalf("inode %d unresolved", s.Inode)
		}
	}
	return r.Stats().Processes - before.Processes
}

func TestScanOrder(t *testing.T) {
	f := newFakeProc(t)
	for pid := 1; pid <= 50; pid++ {
		f.add(pid, "/dev/null", "pipe:[7]", sock(uint64(1000+pid)))
	}
	f.add(12, "anon_inode:[eventfd]")
	// Not a process.
	if err := os.Mkdir(filepath.Join(f.root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := New(f.root)

	// Newest first.
	if n := r.visits(t, 1050); n != 1 {
		t.Errorf("owner is the newest process: %d visits, want 1", n)
	}
	// Owners since the last scan come first: 50, then the rest downward.
	if n := r.visits(t, 1050, 1010); n != 41 {
		t.Errorf("owner is pid 10: %d visits, want 41", n)
	}
	f.add(10, sock(2010))
	if err := os.RemoveAll(filepath.Join(f.root, "6")); err != nil {
		t.Fatal(err)
	}
	if n := r.visits(t, 1050, 1010, 2010); n != 1 {
		t.Errorf("owner is the most recent owner: %d visits, want 1", n)
	}
	// A process born since the last scan comes right after recent owners,
	// whatever its PID.
	f.add(6, sock(2006))
	f.add(60, "/dev/null")
	if n := r.visits(t, 2006); n != 4 { // 10 and 50 (recent), 60 (newer), 6
		t.Errorf("owner is a new process: %d visits, want 4", n)
	}
	if st := r.Stats(); st.Scans != 4 || st.Denied != 0 {
		t.Errorf("Stats = %+v, want 4 scans, 0 denied", st)
	}
}

func TestScanStopsEarly(t *testing.T) {
	f := newFakeProc(t)
	f.add(1, sock(11), sock(12), sock(13))
	f.add(2, sock(21))
	r := New(f.root)
	r.visits(t, 21)
	if st := r.Stats(); st.Processes != 1 || st.Readlinks != 1 {
		t.Errorf("Stats = %+v, want 1 process, 1 readlink", st)
	}
}

// TestResolveRetry is the accept() race: the socket is in the table one
// poll before its fd is.
func TestResolveRetry(t *testing.T) {
	f := newFakeProc(t)
	f.add(1, sock(11))
	r := New(f.root)
	socks := []collector.Socket{{Inode: 11}, {Inode: 12}}
	r.Resolve(socks)
	if socks[0].Pid != 1 || socks[1].Pid != -1 {
		t.Fatalf("Pids = %d, %d; want 1, -1", socks[0].Pid, socks[1].Pid)
	}
	f.add(1, sock(12))
	r.Resolve(socks)
	if socks[1].Pid != 1 {
		t.Errorf("retry: Pid = %d, want 1", socks[1].Pid)
	}
}

// Once given up on, an inode is not looked for, but is filled in if a
// scan for another one meets it.
func TestResolveGivenUpFilledWhenMet(t *testing.T) {
	f := newFakeProc(t)
	f.add(1, "/dev/null")
	r := New(f.root)
	socks := []collector.Socket{{Inode: 11}}
	for range maxScans + 1 {
		r.Resolve(socks)
	}
	if st := r.Stats(); st.Scans != maxScans || st.Unresolved != 1 {
		t.Fatalf("Stats = %+v, want %d scans, 1 unresolved", st, maxScans)
	}
	// Newest first: 3 is visited, and 11 met, before 2 ends the scan.
	f.add(2, sock(12))
	f.add(3, sock(11))
	socks = append(socks, collector.Socket{Inode: 12})
	r.Resolve(socks)
	if socks[0].Pid != 3 || socks[1].Pid != 2 {
		t.Errorf("Pids = %d, %d; want 3, 2", socks[0].Pid, socks[1].Pid)
	}
	if st := r.Stats(); st.Unresolved != 0 {
		t.Errorf("Unresolved = %d, want 0", st.Unresolved)
	}
}

func TestResolveNoProcRoot(t *testing.T) {
	r := New(filepath.Join(t.TempDir(), "missing"))
	socks := []collector.Socket{{Inode: 11}}
	r.Resolve(socks)
	if socks[0].Pid != -1 {
		t.Errorf("Pid = %d, want -1", socks[0].Pid)
	}
}

func BenchmarkResolveSteadyState(b *testing.B) {
	socks := loopbackSockets(b, 1000)
	r := New("/proc")
	r.Resolve(socks)
	b.ReportAllocs()
	for b.Loop() {
		r.Resolve(socks)
	}
	if st := r.Stats(); st.Scans != 1 {
		b.Fatalf("Scans = %d, want 1", st.Scans)
	}
}

// BenchmarkResolveOneNew polls 2001 sockets of which one is new each time:
// it is dropped from one poll, so pruned, and back in the next. Its owner,
// this process, is a recent owner, and the new socket its last fd.
func BenchmarkResolveOneNew(b *testing.B) {
	socks := loopbackSockets(b, 1000)
	last := len(socks) - 1
	r := New("/proc")
	r.Resolve(socks)
	b.ReportAllocs()
	for b.Loop() {
		r.Resolve(socks[:last])
		r.Resolve(socks)
	}
	if socks[last].Pid != int32(os.Getpid()) {
		b.Fatalf("Pid = %d", socks[last].Pid)
	}
	st := r.Stats()
	b.ReportMetric(float64(st.Readlinks)/float64(st.Scans), "readlinks/scan")
}

// BenchmarkResolveMissing is the worst case: an inode no process holds,
// so every fd of every process is read.
func BenchmarkResolveMissing(b *testing.B) {
	socks := loopbackSockets(b, 1000)
	r := New("/proc")
	r.Resolve(socks)
	b.ReportAllocs()
	socks = append(socks, collector.Socket{})
	for i := uint64(1); b.Loop(); i++ {
		socks[len(socks)-1].Inode = 1<<62 + i
		r.Resolve(socks)
	}
	st := r.Stats()
	b.ReportMetric(float64(st.Processes)/float64(st.Scans), "procs/scan")
	b.ReportMetric(float64(st.Readlinks)/float64(st.Scans), "readlinks/scan")
}

// A process with many sockets that opens one more: the next scan reads the
// new fd's link only, trusting the fds that still point to live sockets.
func TestScanTrustsLiveSockets(t *testing.T) {
	f := newFakeProc(t)
	var targets []string
	socks := make([]collector.Socket, 0, 1001)
	for i := uint64(1); i <= 1000; i++ {
		targets = append(targets, sock(i))
		socks = append(socks, collector.Socket{Inode: i})
	}
	f.add(1, targets...)
	f.add(2, "/dev/null")
	r := New(f.root)
	r.Resolve(socks)
	checkPidsAre(t, socks, 1)

	f.add(1, sock(5000))
	socks = append(socks, collector.Socket{Inode: 5000})
	before := r.Stats()
	r.Resolve(socks)
	checkPidsAre(t, socks, 1)
	st := r.Stats()
	if n := st.Readlinks - before.Readlinks; n > 2 {
		t.Errorf("%d links read to find one new socket among 1,000 known ones", n)
	}
	// (The scan stops once the new one is found: up to 1,000 trusted.)
	if n := st.Trusted - before.Trusted; n == 0 {
		t.Errorf("no link trusted")
	}
	if st.FullScans != 0 {
		t.Errorf("FullScans = %d", st.FullScans)
	}
}

// The case trust gets wrong: an fd closed and reused for a new socket while
// its old socket lives on in another process (inherited). The new socket
// is missed once, then found by a scan that reads every link.
func TestScanReadsAgainWhenTrustMisses(t *testing.T) {
	f := newFakeProc(t)
	f.add(1, sock(105)) // fd 0
	f.add(2, sock(105)) // inherited
	r := New(f.root)
	socks := []collector.Socket{{Inode: 105}}
	r.Resolve(socks)
	if socks[0].Pid < 0 {
		t.Fatal("105 unresolved")
	}
	// Both visited: make sure 1's fd 0 is known as 105.
	r.Resolve([]collector.Socket{{Inode: 105}, {Inode: 999}}) // 999: nowhere, vanishes
	link := filepath.Join(f.root, "1", "fd", "0")
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sock(200), link); err != nil {
		t.Fatal(err)
	}
	socks = []collector.Socket{{Inode: 105}, {Inode: 200}}
	r.Resolve(socks)
	r.Resolve(socks)
	if socks[1].Pid != 1 {
		t.Errorf("the socket behind the reused fd: Pid %d, want 1", socks[1].Pid)
	}
	if st := r.Stats(); st.FullScans != 1 {
		t.Errorf("FullScans = %d, want 1 (for 200, missed once while live)", st.FullScans)
	}
}

// Churn: a socket that closes between the snapshot and the scan is looked
// for once and never again (it is not in the next snapshot), so it costs no
// scan that reads every link.
func TestScanChurnNoFullScan(t *testing.T) {
	f := newFakeProc(t)
	f.add(1, sock(1), sock(2))
	r := New(f.root)
	for i := uint64(10); i < 20; i++ {
		// i vanished before the scan; the next snapshot has a new one.
		r.Resolve([]collector.Socket{{Inode: 1}, {Inode: 2}, {Inode: i}})
	}
	if st := r.Stats(); st.FullScans != 0 {
		t.Errorf("FullScans = %d after 10 vanished sockets, want 0", st.FullScans)
	}
}

func checkPidsAre(t *testing.T, socks []collector.Socket, pid int32) {
	t.Helper()
	for _, s := range socks {
		if s.Pid != pid {
			t.Fatalf("inode %d: Pid %d, want %d", s.Inode, s.Pid, pid)
		}
	}
}
