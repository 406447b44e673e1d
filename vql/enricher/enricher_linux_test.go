//go:build linux

package enricher

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The test binary doubles as the process to describe: with this variable
// set it waits for stdin to close instead of running the tests.
const helperEnv = "NETWATCH_ENRICHER_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startHelper runs a copy of the test binary named name, with args, until
// the test ends.
func startHelper(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	return cmd
}

func TestLookupChild(t *testing.T) {
	// Long enough for the kernel to truncate the name to "enricher-helper".
	const name = "enricher-helper-process"
	cmd := startHelper(t, name, "-test.run=^$", "two words", "x")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}

	e := New("/proc", 16)
	p, err := e.Lookup(int32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	want := Process{
		Pid:         int32(cmd.Process.Pid),
		Ppid:        int32(os.Getpid()),
		Name:        name,
		Exe:         cmd.Path,
		CommandLine: cmd.Path + " -test.run=^$ two words x",
		Username:    me.Username,
		UID:         int32(os.Getuid()),
		CreateTime:  p.CreateTime,
		StartTicks:  p.StartTicks,
	}
	if *p != want {
		t.Errorf("Lookup = %+v\nwant     %+v", *p, want)
	}
	// btime has a resolution of a second.
	if d := time.Since(p.CreateTime); d < -2*time.Second || d > 5*time.Second {
		t.Errorf("CreateTime = %v, %v from now", p.CreateTime, d)
	}

	p2, err := e.Lookup(int32(cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if p2 != p {
		t.Error("second Lookup did not return the cached Process")
	}
	if st := e.counters(); st.Hits != 1 || st.Misses != 1 || st.Cached != 1 {
		t.Errorf("Stats = %+v, want 1 hit, 1 miss, 1 cached", st)
	}
}

func TestLookupSelf(t *testing.T) {
	e := New("/proc", 16)
	p, err := e.Lookup(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	if p.Pid != int32(os.Getpid()) || p.Ppid != int32(os.Getppid()) || p.Exe != exe {
		t.Errorf("Lookup(self) = %+v", *p)
	}
}

func TestLookupMissing(t *testing.T) {
	e := New("/proc", 16)
	// Above PID_MAX_LIMIT (4M): no process can have it.
	p, err := e.Lookup(1 << 30)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lookup of a missing PID = %v, %v; want an fs.ErrNotExist error", p, err)
	}
	if st := e.counters(); st.Misses != 0 || st.Cached != 0 {
		t.Errorf("Stats = %+v, want nothing cached", st)
	}
}

// fakeProc is a procRoot of plain files.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) fakeProc {
	f := fakeProc{t, t.TempDir()}
	f.write("stat", "cpu  1 2 3 4\nbtime 1700000000\nprocesses 9\n")
	return f
}

func (f fakeProc) write(name, content string) {
	path := filepath.Join(f.root, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// process lays out the files of one process; its uid is this process's.
func (f fakeProc) process(pid int, comm string, start uint64, exe, cmdline string) {
	dir := strconv.Itoa(pid)
	f.write(filepath.Join(dir, "stat"), statLine(pid, comm, 1, start))
	f.write(filepath.Join(dir, "cmdline"), cmdline)
	f.write(filepath.Join(dir, "status"), "Name:\t"+comm+"\nUid:\t"+strconv.Itoa(os.Getuid())+"\t0\t0\t0\n")
	link := filepath.Join(f.root, dir, "exe")
	os.Remove(link)
	if err := os.Symlink(exe, link); err != nil {
		f.t.Fatal(err)
	}
}

func TestLookupPidReuse(t *testing.T) {
	f := newFakeProc(t)
	f.process(100, "old", 5000, "/usr/bin/old", "old\x00-v\x00")
	e := New(f.root, 16)
	p, err := e.Lookup(100)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "old" || p.Exe != "/usr/bin/old" || p.CommandLine != "old -v" || p.StartTicks != 5000 ||
		!p.CreateTime.Equal(time.Unix(1700000000+50, 0)) {
		t.Errorf("Lookup = %+v", *p)
	}

	// Same PID, new process.
	f.process(100, "new", 6000, "/usr/bin/new", "new\x00")
	p, err = e.Lookup(100)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "new" || p.Exe != "/usr/bin/new" || p.CommandLine != "new" || p.StartTicks != 6000 ||
		!p.CreateTime.Equal(time.Unix(1700000000+60, 0)) {
		t.Errorf("Lookup after PID reuse = %+v", *p)
	}
	if st := e.counters(); st.Hits != 0 || st.Misses != 2 {
		t.Errorf("Stats = %+v, want 0 hits, 2 misses", st)
	}
}

func TestLookupLRUBound(t *testing.T) {
	f := newFakeProc(t)
	for pid := 1; pid <= 10; pid++ {
		f.process(pid, "p"+strconv.Itoa(pid), uint64(pid), "/bin/p", "p\x00")
	}
	e := New(f.root, 3)
	for pid := int32(1); pid <= 10; pid++ {
		if _, err := e.Lookup(pid); err != nil {
			t.Fatal(err)
		}
	}
	if st := e.counters(); st.Cached != 3 || st.Misses != 10 {
		t.Fatalf("Stats = %+v, want 3 cached, 10 misses", st)
	}
	for _, pid := range []int32{8, 9, 10, 1} {
		e.Lookup(pid)
	}
	if st := e.counters(); st.Cached != 3 || st.Hits != 3 || st.Misses != 11 {
		t.Errorf("Stats = %+v, want 3 cached, 3 hits, 11 misses", st)
	}
}

func TestLookupDetailsMissing(t *testing.T) {
	f := newFakeProc(t)
	// A kernel thread, or a process whose details we may not read.
	f.write("7/stat", statLine(7, "kthreadd", 0, 3))
	e := New(f.root, 16)
	p, err := e.Lookup(7)
	if err != nil {
		t.Fatal(err)
	}
	want := Process{Pid: 7, Name: "kthreadd", UID: -1, CreateTime: time.Unix(1700000000, 30e6), StartTicks: 3}
	if *p != want {
		t.Errorf("Lookup = %+v\nwant     %+v", *p, want)
	}
}

func TestLookupBadStat(t *testing.T) {
	f := newFakeProc(t)
	f.write("7/stat", "7 (x) S 1\n")
	if p, err := New(f.root, 16).Lookup(7); err == nil {
		t.Errorf("Lookup of a malformed stat = %+v, want an error", *p)
	}
}

func BenchmarkLookupHit(b *testing.B) {
	e := New("/proc", 16)
	pid := int32(os.Getpid())
	e.Lookup(pid)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Lookup(pid); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookupMiss(b *testing.B) {
	e := New("/proc", 1)
	pids := []int32{int32(os.Getpid()), int32(os.Getppid())}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := e.Lookup(pids[i%2]); err != nil {
			b.Fatal(err)
		}
	}
}
