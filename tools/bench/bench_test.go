//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary is also the helper processes, as the bench binary is.
func TestMain(m *testing.M) {
	if runHelper(os.Args[1:]) {
		return
	}
	os.Exit(m.Run())
}

// testHarness is a harness whose helpers are this test binary.
func testHarness(t *testing.T, cfg *Config) *harness {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"holder", "idle", "churn", "conn"} {
		if err := os.Symlink(exe, filepath.Join(dir, "nwbench-"+name)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	h := &harness{ctx: ctx, cfg: cfg, dir: dir, procs: map[*exec.Cmd]bool{}, t0: time.Now(),
		res: &Results{Config: cfg}}
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for cmd := range h.procs {
			cmd.Process.Kill()
		}
	})
	return h
}

// procNetTCP returns the (local port, remote port, state) of every IPv4 TCP
// socket on 127.0.0.0/8.
func procNetTCP(t *testing.T) [][3]int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][3]int
	sc := bufio.NewScanner(f)
	sc.Scan()
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || !strings.HasSuffix(strings.Split(fs[1], ":")[0], "7F") {
			continue
		}
		lp, _ := strconv.ParseInt(strings.Split(fs[1], ":")[1], 16, 32)
		rp, _ := strconv.ParseInt(strings.Split(fs[2], ":")[1], 16, 32)
		st, _ := strconv.ParseInt(fs[3], 16, 32)
		out = append(out, [3]int{int(lp), int(rp), int(st)})
	}
	return out
}

func TestHolderHoldsSocketsAndProcesses(t *testing.T) {
	t.Parallel()
	h := testHarness(t, &Config{ProcFds: 4})
	hp, err := h.startHolder(20, 3)
	if err != nil {
		t.Fatal(err)
	}
	holderPid := hp.cmds[0].Process.Pid

	// The listener's port: the LISTEN socket among the holder's.
	var port, estab int
	for _, s := range procNetTCP(t) {
		if s[2] == 0x0A && s[1] == 0 {
			if fdOwnedBy(t, holderPid, s[0]) {
				port = s[0]
			}
		}
	}
	if port == 0 {
		t.Fatal("no listener of the holder in /proc/net/tcp")
	}
	for _, s := range procNetTCP(t) {
		if s[2] == 0x01 && (s[0] == port || s[1] == port) {
			estab++
		}
	}
	if estab != 20 {
		t.Errorf("%d established sockets on port %d in /proc/net/tcp, want 20", estab, port)
	}
	var idle int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		stat, err2 := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil || err2 != nil || strings.TrimSpace(string(comm)) != "nwbench-idle" {
			continue
		}
		if f := strings.Fields(string(stat)); len(f) > 3 && f[3] == strconv.Itoa(holderPid) {
			idle++
		}
	}
	if idle != 3 {
		t.Errorf("%d idle processes under the holder, want 3", idle)
	}

	h.stopHolder(hp)
	for _, s := range procNetTCP(t) {
		if s[0] == port || s[1] == port {
			t.Errorf("socket %v still there after the holder stopped (it closes with RST)", s)
		}
	}
}

// fdOwnedBy tells whether the listening socket on port is the holder's, by
// comparing inodes; good enough to pick the holder's listener in a test.
func fdOwnedBy(t *testing.T, pid, port int) bool {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	want := fmt.Sprintf(":%04X 00000000:0000 0A", port)
	var inode string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, want) {
			if f := strings.Fields(l); len(f) > 9 {
				inode = f[9]
			}
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); l == "socket:["+inode+"]" {
			return true
		}
	}
	return false
}

func TestMatchCapture(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	launched := []Launched{
		{Pid: 100, Port: 40000, Name: "nwbench-conn", Lifetime: 300 * time.Millisecond, Launched: t0},
		// The same local port again later (after TIME_WAIT reuse).
		{Pid: 200, Port: 40000, Name: "nwbench-conn", Lifetime: 20 * time.Millisecond, Launched: t0.Add(5 * time.Second)},
		{Pid: 300, Port: 40001, Name: "nwbench-conn", Lifetime: time.Second, Launched: t0},
		{Pid: 400, Port: 40002, Name: "nwbench-conn", Lifetime: time.Second, Launched: t0},
	}
	row := func(diff string, ts time.Time, pid, lport, rport int, status, name string) []byte {
		pi := "null"
		if name != "" {
			pi = fmt.Sprintf(`{"Id":"%d","Data":{"Pid":%d,"Name":%q}}`, pid, pid, name)
		}
		return fmt.Appendf(nil, `{"Diff":%q,"Timestamp":%q,"Pid":%d,"Type":1,"TypeString":"TCP","Laddr":{"IP":"127.0.0.1","Port":%d},"Raddr":{"IP":"127.0.0.1","Port":%d},"Status":%q,"ProcInfo":%s}`+"\n",
			diff, ts.Format(time.RFC3339Nano), pid, lport, rport, status, pi)
	}
	zero := time.Time{}
	lines := []Arrival{
		{t0.Add(200 * time.Millisecond), row("added", t0.Add(100*time.Millisecond), 100, 40000, 9000, "ESTAB", "nwbench-conn")},
		{t0.Add(600 * time.Millisecond), row("removed", t0.Add(500*time.Millisecond), 100, 40000, 9000, "TIME_WAIT", "nwbench-conn")},
		// Second use of the port: only its TIME_WAIT remnant was seen.
		{t0.Add(5200 * time.Millisecond), row("added", t0.Add(5100*time.Millisecond), -1, 40000, 9000, "TIME_WAIT", "")},
		// Stock style: zero Timestamp (arrival time counts), reported twice
		// (ESTAB with the owner, then TIME_WAIT with Pid -1), no name.
		{t0.Add(time.Second), row("added", zero, 300, 40001, 9000, "ESTAB", "")},
		{t0.Add(2 * time.Second), row("added", zero, -1, 40001, 9000, "TIME_WAIT", "")},
		// Right port, wrong listener: not ours.
		{t0.Add(time.Second), row("added", t0, 400, 40002, 9001, "ESTAB", "nwbench-conn")},
		// The server side of a connection: not scored.
		{t0.Add(time.Second), row("added", t0, 1, 9000, 40002, "ESTAB", "bench")},
		{t0.Add(time.Second), []byte("not json\n")},
	}
	got := matchCapture(launched, lines, 9000)
	want := []struct {
		added                          int
		rightPid, rightName, onceRight bool
		firstPid                       int
	}{
		{1, true, true, true, 100},
		{1, false, false, false, -1},
		{2, true, false, false, 300},
		{0, false, false, false, 0},
	}
	for i, w := range want {
		g := got[i]
		if g.Added != w.added || g.RightPid != w.rightPid || g.RightName != w.rightName ||
			g.OnceRight != w.onceRight || g.FirstPid != w.firstPid {
			t.Errorf("connection %d: got %+v, want %+v", i, g, w)
		}
	}
	s := summarizeConns(got)
	if s.N != 4 || s.Reported != 3 || s.Dups != 1 || s.Orphan != 1 || s.OnceRight != 1 {
		t.Errorf("summary %+v", s)
	}
}

// The harness against the real binary: a short capture run of each method
// (real child processes and connections, real jsonl rows through the parser
// and matcher) and one CPU window.
func TestAgainstBinary(t *testing.T) {
	bin := os.Getenv("NETWATCH_BINARY")
	if bin == "" {
		t.Skip("NETWATCH_BINARY not set (make unit sets it)")
	}
	cfg := &Config{Binary: bin, Warmup: time.Second, Window: 500 * time.Millisecond, CaptureRate: 10}

	t.Run("netstat_watch capture", func(t *testing.T) {
		t.Parallel()
		c := *cfg
		c.Lifetimes, c.CaptureConns = []time.Duration{300 * time.Millisecond, 20 * time.Millisecond}, 6
		h := testHarness(t, &c)
		cr, conns, err := h.measureCapture(nw(0.1), 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(conns) != 6 || cr.Rows == 0 {
			t.Fatalf("%d connections scored, %d rows read", len(conns), cr.Rows)
		}
		// Every connection leaves a TIME_WAIT remnant, so each has a row
		// whatever the load; attribution quality is the benchmark's
		// business, but the Pid and Name columns must be read for some.
		named := 0
		for _, c := range conns {
			if c.Added == 0 {
				t.Errorf("connection %+v not matched to any added row", c)
			}
			if c.RightName {
				named++
			}
		}
		if named == 0 {
			t.Errorf("no connection matched with its Pid and Name: %+v", conns)
		}
	})
	t.Run("stock capture", func(t *testing.T) {
		t.Parallel()
		c := *cfg
		c.Lifetimes, c.CaptureConns = []time.Duration{2500 * time.Millisecond}, 2
		h := testHarness(t, &c)
		_, conns, err := h.measureCapture(stock(1), 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range conns {
			if c.Added == 0 {
				t.Errorf("2.5 s connection not reported by diff(netstat()) every 1 s: %+v", c)
			}
		}
	})
	t.Run("cpu window", func(t *testing.T) {
		t.Parallel()
		h := testHarness(t, cfg)
		r, err := h.measureCPU(nw(0.1), 1, "sockets", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if r.Polls != 5 || r.CPU <= 0 || r.Window < 0.45 || r.Window > 5 || r.MaxRSSKB == 0 {
			t.Errorf("implausible measurement %+v", r)
		}
	})
}

func TestReportAndPlots(t *testing.T) {
	cfg := quickConfig()
	res := &Results{Config: cfg, Env: Env{Start: time.Now(), End: time.Now().Add(time.Minute)}}
	for i, n := range cfg.Sizes {
		for _, m := range cfg.CPUMethods {
			res.CPU = append(res.CPU, CPURun{Scenario: "sockets", Sockets: n, Method: m.Key, Run: 1,
				Window: 3, CPU: 0.003 * float64(i+1) * (1 + float64(len(m.Key))), Polls: 3, Table: n, MaxRSSKB: 100 << 10})
		}
	}
	for _, m := range cfg.CaptureMethods {
		for i, l := range cfg.Lifetimes {
			// Each its own local port: one port used twice is a recycled
			// remnant, left out of the short-connection target.
			res.Conns = append(res.Conns, ConnResult{Method: m.Key, Run: 1, LifeMS: int(l / time.Millisecond),
				Port: 40000 + i, Added: 1, RightPid: true, RightName: true, OnceRight: true})
		}
	}
	for _, p := range cfg.ProcCounts {
		for _, m := range cfg.ProcMethod {
			res.CPU = append(res.CPU, CPURun{Scenario: "procs", Sockets: cfg.ProcSize, Procs: p, Method: m.Key, Run: 1,
				Window: 3, CPU: 0.003 * (1 + float64(len(m.Key))), Polls: 3, Table: cfg.ProcSize, MaxRSSKB: 100 << 10})
		}
	}
	res.Mem = []MemRun{{Method: nw(0.1).Key, Run: 1, Sockets: cfg.MemSize, MaxRSSKB: 120 << 10, CPU: 1, Window: 8}}

	// A target without a figure fails the report: here the memory
	// scenario, and a period the targets do not know.
	noMem := *res
	noMem.Mem = nil
	if err := writeReport(&noMem, t.TempDir()); err == nil || !strings.Contains(err.Error(), "max RSS") {
		t.Errorf("report without the memory figure: %v, want a failure naming its target", err)
	}
	renamed := *res
	renamed.CPU = nil
	for _, r := range res.CPU {
		if r.Method == nw(0.1).Key {
			r.Method = nw(0.2).Key
		}
		renamed.CPU = append(renamed.CPU, r)
	}
	if err := writeReport(&renamed, t.TempDir()); err == nil {
		t.Error("report with nw-0.1s renamed: no failure")
	}

	dir := t.TempDir()
	if err := writeReport(res, dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "BENCHMARKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Targets", "**PASS**", cpuPlot, capturePlot, "Recommended default period"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, name := range []string{cpuPlot, capturePlot} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() < 500 {
			t.Errorf("%s: %v", name, err)
		}
	}
}
