//go:build !linux

package enricher

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The gopsutil-based Enricher, on the test process itself. On Linux the
// /proc one is tested instead; tools/wine/smoke.sh runs this under Wine.
func TestLookupSelf(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pid := int32(os.Getpid())
	e := New("", 4)
	p, err := e.Lookup(pid)
	if err != nil {
		t.Fatal(err)
	}
	if p.Pid != pid || p.Ppid != int32(os.Getppid()) || !strings.EqualFold(p.Name, filepath.Base(exe)) {
		t.Errorf("pid %d ppid %d name %q, want pid %d ppid %d name %q",
			p.Pid, p.Ppid, p.Name, pid, os.Getppid(), filepath.Base(exe))
	}
	if !strings.EqualFold(filepath.Base(p.Exe), filepath.Base(exe)) {
		t.Errorf("exe %q, want %q", p.Exe, exe)
	}
	if !strings.Contains(p.CommandLine, "-test.") {
		t.Errorf("command line %q lacks the test flags", p.CommandLine)
	}
	if p.Username == "" {
		t.Error("no username")
	}
	if age := time.Since(p.CreateTime); age < 0 || age > time.Hour || p.StartTicks == 0 {
		t.Errorf("create time %v (%d)", p.CreateTime, p.StartTicks)
	}
	again, err := e.Lookup(pid)
	if err != nil || again != p {
		t.Errorf("second lookup: %p %v, want the cached %p", again, err, p)
	}
	if st := e.counters(); st.Hits != 1 || st.Misses != 1 || st.Cached != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestLookupMissing(t *testing.T) {
	e := New("", 4)
	// Windows PIDs are multiples of 4, and none is this large.
	if p, err := e.Lookup(0x7ffffff8); err == nil {
		t.Errorf("lookup of a missing process: %+v", p)
	}
}

// Processes the test may not open (the System process on Windows, launchd
// on macOS when not root) are described as far as possible, never with a
// panic.
func TestLookupPrivileged(t *testing.T) {
	e := New("", 4)
	for _, pid := range []int32{1, 4} {
		p, err := e.Lookup(pid)
		t.Logf("pid %d: %+v, %v", pid, p, err)
		if err == nil && p.Name == "" {
			t.Errorf("pid %d described without a name", pid)
		}
	}
}
