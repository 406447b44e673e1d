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
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	got := matchCapture(launched, lines, 9000, 0)
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
	t.Run("kpace", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root for ip netns and kernel events")
		}
		c := *cfg
		c.KpaceRate, c.KpaceFor, c.KpaceLife = 50, 2*time.Second, time.Millisecond
		h := testHarness(t, &c)
		child, err := h.buildKpaceChild()
		if err != nil {
			t.Fatal(err)
		}
		ns, err := newNetns(fmt.Sprintf("nwbench-t%d", os.Getpid()))
		if err != nil {
			t.Fatal(err)
		}
		defer ns.close()
		host, err := netnsInode("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		r, conns, err := h.measureKpace(ebpfMethod, 1, child, ns, host)
		if err != nil {
			t.Fatal(err)
		}
		// Real rows through the filter and the matcher: kernel events name
		// the child of every group, the second namespace included; the
		// share is the benchmark's business, but each group has some.
		right := map[string]int{}
		for _, c := range conns {
			if c.OnceRight {
				right[c.Dir+" "+c.Netns]++
			}
		}
		if len(right) != 4 || r.Rows == 0 {
			t.Errorf("%d children, %d rows kept; once and right by group: %v", r.Launched, r.Rows, right)
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

// syntheticResults is a run of cfg where every method measured something,
// every connection was reported once and right, every target has a figure.
func syntheticResults(cfg *Config) *Results {
	res := &Results{Config: cfg, Env: Env{Start: time.Now(), End: time.Now().Add(time.Minute)}}
	// CPU seconds over a 3 s window: the idle query's 3 ms/s plus a cost
	// linear in the sockets read, per poll.
	cpu := func(m Method, n int) float64 {
		perPoll := map[Kind]float64{Stock: 60e-3, Watch: 1e-3, SS: 30e-3}[m.Kind] * float64(n) / 1024
		rate := 3e-3 + perPoll/m.Period
		if m.Kind == Kernel {
			rate += 1e-3
		}
		return 3 * rate
	}
	for _, n := range cfg.Sizes {
		for _, m := range cfg.CPUMethods {
			res.CPU = append(res.CPU, CPURun{Scenario: "sockets", Sockets: n, Method: m.Key, Run: 1,
				Window: 3, CPU: cpu(m, n), Polls: int(3 / m.Period), Table: n, MaxRSSKB: 100 << 10})
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
				Window: 3, CPU: cpu(m, cfg.ProcSize), Polls: int(3 / m.Period), Table: cfg.ProcSize, MaxRSSKB: 100 << 10})
		}
	}
	for _, m := range cfg.MemMethods {
		res.Mem = append(res.Mem, MemRun{Method: m.Key, Run: 1, Sockets: cfg.MemSize, MaxRSSKB: 120 << 10, CPU: 1, Window: 8})
	}
	for _, m := range cfg.KpaceMethods {
		res.Kpace = append(res.Kpace, KpaceRun{Method: m.Key, Run: 1, Asked: cfg.KpaceRate, Launched: 8000, LaunchSecs: 8,
			ChildCPU: 80, LauncherCPU: 8, CPU: 0.1, Window: 10, Rows: 16000})
		for i := 0; i < 800; i++ {
			c := ConnResult{Method: m.Key, Run: 1, LifeMS: 1, Port: 30000 + i, Dir: "out", Netns: "host",
				Added: 1, RightPid: true, RightName: true, OnceRight: true}
			if i%2 == 1 {
				c.Dir = "in"
			}
			if i%8 >= 6 {
				c.Netns = "second"
			}
			res.KpaceConns = append(res.KpaceConns, c)
		}
	}
	return res
}

// without is res with the results of scenario s left out.
func without(res *Results, s Scenario) *Results {
	out := *res
	switch s {
	case ScCPU, ScProcs:
		scen := map[Scenario]string{ScCPU: "sockets", ScProcs: "procs"}[s]
		out.CPU = nil
		for _, r := range res.CPU {
			if r.Scenario != scen {
				out.CPU = append(out.CPU, r)
			}
		}
	case ScCapture:
		out.Capture, out.Conns = nil, nil
	case ScMemory:
		out.Mem = nil
	case ScKpace:
		out.Kpace, out.KpaceConns = nil, nil
	}
	return &out
}

func TestReportAndPlots(t *testing.T) {
	res := syntheticResults(fullConfig())
	dir := t.TempDir()
	if err := writeReport(res, dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "BENCHMARKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	// The template renders every target, each with its figure and verdict.
	for _, d := range targetDefs {
		line := ""
		for _, l := range strings.Split(md, "\n") {
			if strings.HasPrefix(l, fmt.Sprintf("| %d | %s |", d.Issue, d.Name)) {
				line = l
			}
		}
		if line == "" {
			t.Errorf("target %q not in the report", d.Name)
		} else if !strings.Contains(line, "**PASS**") {
			t.Errorf("target %q: want PASS on synthetic figures, got %s", d.Name, line)
		}
	}
	for _, want := range []string{"## Targets", cpuPlot, capturePlot, kpacePlot, "Recommended default period",
		"## 6. Kernel pace: 1 ms connections at 1,000/s", "inbound, second netns", "Trimmed from the full run to fit 50 minutes: ", "<no value>"} {
		if got := strings.Contains(md, want); got != (want != "<no value>") {
			t.Errorf("report: %q present = %v", want, got)
		}
	}
	for _, name := range []string{cpuPlot, capturePlot, kpacePlot} {
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

// A target without a figure fails the report and is named: every
// scenario's results left out in turn, and a period the targets do not know.
func TestMissingFigureFails(t *testing.T) {
	res := syntheticResults(fullConfig())
	for _, s := range scenarios {
		err := writeReport(without(res, s), t.TempDir())
		for _, d := range targetDefs {
			needed := false
			for _, n := range d.Needs {
				needed = needed || n.Scenario == s
			}
			if needed && (err == nil || !strings.Contains(err.Error(), d.Name)) {
				t.Errorf("without %s: %v; want a failure naming %q", s, err, d.Name)
			}
		}
	}
	renamed := *res
	renamed.CPU = nil
	for _, r := range res.CPU {
		if r.Method == nw(0.1).Key {
			r.Method = nw(0.2).Key
		}
		renamed.CPU = append(renamed.CPU, r)
	}
	if err := writeReport(&renamed, t.TempDir()); err == nil || !strings.Contains(err.Error(), "needs nw-0.1s in cpu") {
		t.Errorf("report with nw-0.1s renamed: %v", err)
	}
	// One group of the kernel-pace connections missing (here the second
	// namespace) is a MISS, not a PASS on the rest.
	noNS := *res
	noNS.KpaceConns = nil
	for _, c := range res.KpaceConns {
		if c.Netns == "host" {
			noNS.KpaceConns = append(noNS.KpaceConns, c)
		}
	}
	if o := newAnalysis(&noNS).kpaceCaptureTarget(); o.Figure == "" || o.Pass {
		t.Errorf("kpace without the second namespace: %+v, want a MISS", o)
	}
}

// Every target's methods are in the scenarios of both configs, and the full
// one measures what the issue-12 targets name (4k/16k/64k idle, 64k memory)
// in the time allowed.
func TestConfigsCoverTargets(t *testing.T) {
	for name, cfg := range map[string]*Config{"full": fullConfig(), "quick": quickConfig()} {
		for _, d := range targetDefs {
			for _, n := range d.Needs {
				found := false
				for _, m := range cfg.methods(n.Scenario) {
					found = found || m == n.Method
				}
				if !found {
					t.Errorf("%s config: target %q needs %s in %s", name, d.Name, n.Method.Key, n.Scenario)
				}
			}
		}
	}
	full := fullConfig()
	for _, n := range []int{4096, 16384, 65536} {
		if !containsInt(full.Sizes, n) {
			t.Errorf("full config: no CPU figure at %d sockets", n)
		}
	}
	if full.MemSize != 65536 || full.KpaceRate != 1000 || full.KpaceFor != time.Minute || full.KpaceLife != time.Millisecond {
		t.Errorf("full config: memory at %d, kpace %v/s for %v of %v", full.MemSize, full.KpaceRate, full.KpaceFor, full.KpaceLife)
	}
	t.Logf("estimated: full %v, quick %v", full.estimate(), quickConfig().estimate())
	if d := full.estimate(); d > 48*time.Minute {
		t.Errorf("full config: %v of measuring estimated, more than 48 minutes (50 allowed, with some waiting)", d)
	}
}

func TestMatchConnsByNamespace(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const host, second = 4026531840, 4026532999
	launched := []Launched{
		{Pid: 10, Port: 41000, RPort: 9000, Dir: "out", Name: "nwbench-kpace", Launched: t0},
		{Pid: 11, Port: 41000, RPort: 9000, Netns: second, Dir: "out", Name: "nwbench-kpace", Launched: t0},
		{Pid: 12, Port: 42000, RPort: 50000, Dir: "in", Name: "nwbench-kpace", Launched: t0},
	}
	row := func(ns uint64, pid, lport, rport int) Arrival {
		nsCol := ""
		if ns != 0 {
			nsCol = fmt.Sprintf(`,"Netns":%d`, ns)
		}
		return Arrival{t0.Add(time.Second), fmt.Appendf(nil, `{"Diff":"added","Timestamp":%q,"Pid":%d,"Type":1,"Laddr":{"IP":"127.0.0.1","Port":%d},"Raddr":{"IP":"127.0.0.1","Port":%d},"ProcInfo":{"Data":{"Name":"nwbench-kpace"}}%s}`,
			t0.Add(time.Second).Format(time.RFC3339Nano), pid, lport, rport, nsCol)}
	}
	got := matchConns(launched, []Arrival{
		row(second, 11, 41000, 9000), // kernel events, second namespace
		row(0, 10, 41000, 9000),      // stock: no Netns column, so the host's
		row(host, 12, 42000, 50000),  // inbound, host
		row(host, 12, 50000, 42000),  // the harness's end: not scored
	}, host)
	for i, c := range got {
		if c.Added != 1 || !c.OnceRight {
			t.Errorf("connection %d (%+v): %+v", i, launched[i], c)
		}
	}
}

// The kernel-pace launcher on its own: children in both directions and in
// the second namespace, each with its connection, and the namespace gone
// after.
func TestKpaceLaunch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for ip netns")
	}
	h := testHarness(t, &Config{KpaceRate: 100, KpaceFor: 1500 * time.Millisecond, KpaceLife: time.Millisecond})
	child, err := h.buildKpaceChild()
	if err != nil {
		t.Fatal(err)
	}
	host, err := netnsInode("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := newNetns(fmt.Sprintf("nwbench-test-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	// The process's own namespace (its main thread's, which /proc/net
	// shows) stays the host's, whichever thread entered the second one.
	ns.run(func() {})
	if got, _ := netnsInode("/proc/self/ns/net"); got != host || ns.ino == host {
		t.Errorf("process namespace %d after entering %d, want %d", got, ns.ino, host)
	}
	l, err := newKpaceListeners(ns)
	if err != nil {
		ns.close()
		t.Fatal(err)
	}
	var r KpaceRun
	launched, err := h.launchKpace(&r, child, ns, l, 1)
	l.close()
	ns.close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ns.path); err == nil {
		t.Errorf("%s still there after close", ns.path)
	}
	groups := map[[2]bool]int{}
	for _, c := range launched {
		if c.Pid <= 0 || c.Port == 0 || c.RPort == 0 || c.Exited.IsZero() {
			t.Errorf("incomplete: %+v", c)
		}
		groups[[2]bool{c.Dir == "out", c.Netns == ns.ino}]++
	}
	if len(groups) != 4 || r.Launched < 20 || r.Failed > 0 {
		t.Errorf("%d children (%d failed), by (outbound, second namespace): %v", r.Launched, r.Failed, groups)
	}
}

// A thread that ends keeps its CPU time in taskCPU: the bench measured
// kernel events at a third of their cost while netstat_watch ended a
// thread per namespace read.
func TestTaskCPUCountsEndedThreads(t *testing.T) {
	c0, err := taskCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Goroutines that exit locked end their threads (all but one that
	// lands on the main thread, which the runtime parks instead).
	const threads, burn = 4, 100 * time.Millisecond
	var wg sync.WaitGroup
	for range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked
			// The thread may have run other goroutines before: burn
			// on top of what it has.
			used := func() time.Duration {
				var ru syscall.Rusage
				if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
					t.Error(err)
					return 1 << 62 // ends the loop
				}
				return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			}
			for start := used(); used()-start < burn && !t.Failed(); {
				for i := 0; i < 1e6; i++ {
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // the threads' exit
	c1, err := taskCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d, want := c1-c0, threads*burn-30*time.Millisecond; d < want {
		t.Errorf("taskCPU grew by %v after %d threads burned %v each and ended", d, threads, burn)
	}
}
