//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Results is everything one harness run measured (raw, saved as JSON).
type Results struct {
	Env     Env
	Config  *Config
	CPU     []CPURun
	Capture []CaptureRun
	Conns   []ConnResult
	Mem     []MemRun
	// Kpace: the kernel-pace scenario, one run per method and repetition,
	// and every child's connection as each method reported it.
	Kpace      []KpaceRun
	KpaceConns []ConnResult
	Failures   []string
}

func (r *Results) Elapsed() time.Duration { return r.Env.End.Sub(r.Env.Start) }

// Env describes the machine and the binaries.
type Env struct {
	Start, End     time.Time
	Kernel         string
	CPUModel       string
	NCPU           int
	GoVersion      string
	Velociraptor   string
	GitRev         string
	BaseTable      int // sockets in the kernel tables before the run
	BaseProcs      int
	Load1Start     float64
	Load1End       float64
	TwReuse        string
	EphemeralPorts string
	HarnessCommand string
}

// CPURun is one steady-state CPU measurement of one method.
type CPURun struct {
	Scenario  string // "sockets" or "procs"
	Sockets   int    // held by the holder
	Procs     int    // idle processes started by the holder
	Method    string
	Run       int
	Table     int     // sockets in the kernel tables right after the window
	TableFrom int     // ... and right before the measurement
	NProc     int     // processes on the machine right after the window
	Window    float64 // seconds
	CPU       float64 // seconds of CPU used in the window
	Polls     int     // polls (ticks, diff() runs, ss calls) in the window
	Saturated bool    // the method could not keep its period
	TotalCPU  float64 // over the whole process life, startup included
	MaxRSSKB  int64
	Rows      int
	Err       string `json:",omitempty"`
}

func (r CPURun) Rate() float64 { return r.CPU / r.Window }
func (r CPURun) PerPoll() float64 {
	if r.Polls == 0 {
		return math.NaN()
	}
	return r.CPU / float64(r.Polls)
}
func (r CPURun) Interval() float64 {
	if r.Polls == 0 {
		return math.NaN()
	}
	return r.Window / float64(r.Polls)
}

// CaptureRun is one run of the capture figure for one method.
type CaptureRun struct {
	Method    string
	Run       int
	Conns     int
	Rows      int
	CPU       float64
	Window    float64
	MaxRSSKB  int64
	TableFrom int    // sockets in the kernel tables before the run
	TableTo   int    // ... and at its end
	Err       string `json:",omitempty"`
}

// MemRun is one run of the memory figure.
type MemRun struct {
	Method    string
	Run       int
	Sockets   int
	ChurnRate int
	ChurnSecs float64
	Churned   string // the churn helper's own report
	Table     int    // sockets in the kernel tables at the end of the churn
	TableFrom int    // ... and before the run
	CPU       float64
	Window    float64
	MaxRSSKB  int64
	Err       string `json:",omitempty"`
}

type harness struct {
	ctx   context.Context
	cfg   *Config
	dir   string // symlinks naming the helper processes
	res   *Results
	mu    sync.Mutex
	procs map[*exec.Cmd]bool // helpers to stop on the way out
	t0    time.Time

	memDone    bool          // the memory figure ran with the CPU figure's holder
	settleLeft time.Duration // what is left of cfg.SettleTotal
}

func newHarness(ctx context.Context, cfg *Config) (*harness, error) {
	if st, err := os.Stat(cfg.Binary); err != nil || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("no executable %s: build it with `make` first", cfg.Binary)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("run as root: every method needs to see the owner of other processes' sockets, and the holder raises RLIMIT_NOFILE")
	}
	if _, err := exec.LookPath("ss"); err != nil {
		return nil, errors.New("`ss` not found (Debian: apt-get install -y iproute2)")
	}
	_ = raiseNofile(65536) // as far as the hard limit allows; the harness needs few
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "nwbench-")
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"holder", "idle", "churn", "conn"} {
		if err := os.Symlink(exe, filepath.Join(dir, "nwbench-"+name)); err != nil {
			return nil, err
		}
	}
	h := &harness{ctx: ctx, cfg: cfg, dir: dir, procs: map[*exec.Cmd]bool{}, t0: time.Now(),
		settleLeft: cfg.SettleTotal}
	h.res = &Results{Config: cfg, Env: h.env()}
	return h, nil
}

func (h *harness) helper(name string) string { return filepath.Join(h.dir, "nwbench-"+name) }

func (h *harness) close() {
	h.mu.Lock()
	for cmd := range h.procs {
		cmd.Process.Kill() // by its own pid
	}
	h.mu.Unlock()
	os.RemoveAll(h.dir)
}

func (h *harness) track(cmd *exec.Cmd, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		h.procs[cmd] = true
	} else {
		delete(h.procs, cmd)
	}
}

func (h *harness) logf(format string, args ...any) {
	fmt.Printf("[%6s] "+format+"\n",
		append([]any{time.Since(h.t0).Round(time.Second).String()}, args...)...)
}

func (h *harness) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.res.Failures = append(h.res.Failures, msg)
	h.logf("FAILED: %s", msg)
}

func (h *harness) run() (*Results, error) {
	cfg := h.cfg
	h.logf("bench: %s, %d run(s) of each measurement, binary %s", map[bool]string{true: "quick", false: "full"}[cfg.Quick], cfg.Runs, cfg.Binary)
	h.logf("planned: about %v of measuring, plus waits for other processes' sockets to go away", cfg.estimate().Round(time.Minute))
	h.logf("machine: %d CPUs, %s, %d sockets and %d processes already there, load %.2f",
		h.res.Env.NCPU, h.res.Env.Kernel, h.res.Env.BaseTable, h.res.Env.BaseProcs, h.res.Env.Load1Start)

	steps := map[Scenario]func() error{
		ScProcs:   h.procScenario,
		ScCapture: h.captureScenario,
		ScCPU:     h.cpuScenario,
		ScMemory:  h.memScenario,
		ScKpace:   h.kpaceScenario,
	}
	for _, s := range scenarios {
		if !cfg.want(s) {
			continue
		}
		if err := steps[s](); err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
	}
	h.res.Env.End = time.Now()
	h.res.Env.Load1End = load1()
	return h.res, nil
}

// --- holder ------------------------------------------------------------------

// holderShard is the most sockets one holder process keeps: RLIMIT_NOFILE
// cannot be raised above its hard limit (20,000 here) without
// CAP_SYS_RESOURCE, so 64k sockets are held by four processes.
const holderShard = 16384

type holderProc struct {
	cmds    []*exec.Cmd
	stdins  []interface{ Close() error }
	sockets int
	procs   int
}

// startHolder starts ceil(sockets/holderShard) holder processes sharing the
// sockets; the first one also starts the idle processes.
func (h *harness) startHolder(sockets, procs int) (*holderProc, error) {
	t := time.Now()
	hp := &holderProc{sockets: sockets, procs: procs}
	shards := (sockets + holderShard - 1) / holderShard
	var ready []string
	for i := 0; i < shards; i++ {
		n := sockets / shards
		if i == shards-1 {
			n = sockets - n*(shards-1)
		}
		p := 0
		if i == 0 {
			p = procs
		}
		line, err := h.startHolderShard(hp, n, p)
		if err != nil {
			h.stopHolder(hp)
			return nil, err
		}
		ready = append(ready, line)
	}
	h.logf("holder: %d process(es): %s (%v)", shards, strings.Join(ready, "; "), time.Since(t).Round(100*time.Millisecond))
	// Let the table and the machine settle after the burst of connects.
	return hp, sleepUntil(h.ctx, time.Now().Add(2*time.Second))
}

func (h *harness) startHolderShard(hp *holderProc, sockets, procs int) (string, error) {
	cmd := exec.Command(h.helper("holder"), "holder", "-sockets", fmt.Sprint(sockets),
		"-procs", fmt.Sprint(procs), "-fds", fmt.Sprint(h.cfg.ProcFds),
		"-idle", h.helper("idle"), "-maxlife", "2h")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	h.track(cmd, true)
	hp.cmds, hp.stdins = append(hp.cmds, cmd), append(hp.stdins, stdin)
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if !strings.HasPrefix(s, "READY") {
			return "", fmt.Errorf("holder did not get ready: %q", s)
		}
		return strings.TrimSpace(strings.TrimPrefix(s, "READY")), nil
	case <-time.After(10 * time.Minute):
		return "", errors.New("holder not ready after 10 minutes")
	case <-h.ctx.Done():
		return "", h.ctx.Err()
	}
}

func (h *harness) stopHolder(hp *holderProc) {
	for _, s := range hp.stdins {
		s.Close()
	}
	for _, cmd := range hp.cmds {
		waitOrKill(cmd, time.Minute)
		h.track(cmd, false)
	}
}

// --- scenarios ---------------------------------------------------------------

// rotate gives each run a different method order, so slow drift of the
// machine's background load does not always hit the same method.
func rotate(ms []Method, run int) []Method {
	out := make([]Method, 0, len(ms))
	for i := range ms {
		out = append(out, ms[(i+run)%len(ms)])
	}
	return out
}

func (h *harness) cpuScenario() error {
	for _, size := range h.cfg.Sizes {
		hp, err := h.startHolder(size, 0)
		if err != nil {
			return err
		}
		err = h.cpuRuns("sockets", size, 0, h.cfg.CPUMethods)
		if err == nil && size == h.cfg.MemSize && h.cfg.want(ScMemory) {
			err = h.memRuns()
			h.memDone = true
		}
		h.stopHolder(hp)
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) procScenario() error {
	for _, n := range h.cfg.ProcCounts {
		hp, err := h.startHolder(h.cfg.ProcSize, n)
		if err != nil {
			return err
		}
		err = h.cpuRuns("procs", h.cfg.ProcSize, n, h.cfg.ProcMethod)
		h.stopHolder(hp)
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) cpuRuns(scenario string, sockets, procs int, methods []Method) error {
	for run := 1; run <= h.cfg.Runs; run++ {
		for _, m := range rotate(methods, run-1) {
			var r CPURun
			var err error
			for attempt := 0; ; attempt++ {
				r, err = h.measureCPU(m, run, scenario, sockets, procs)
				if err != nil || !h.again(attempt, sockets, r.TableFrom, r.Table) {
					break
				}
			}
			if err != nil {
				if h.ctx.Err() != nil {
					return err
				}
				r.Err = err.Error()
				h.fail("%s %s sockets=%d procs=%d run %d: %v", scenario, m.Key, sockets, procs, run, err)
			} else {
				h.logf("%-7s sockets=%-5s procs=%-3d %-10s run %d: %7.2f ms/s CPU, %8.2f ms/poll over %d polls, table %d%s",
					scenario, fmtSockets(sockets), procs, m.Key, run, 1e3*r.Rate(), 1e3*r.PerPoll(),
					r.Polls, r.Table, map[bool]string{true: " (saturated)"}[r.Saturated])
			}
			h.res.CPU = append(h.res.CPU, r)
		}
	}
	return nil
}

// measureCPU runs one method and measures its steady-state CPU over a window
// of whole polls, sampled where the method is idle between two polls.
func (h *harness) measureCPU(m Method, run int, scenario string, sockets, procs int) (CPURun, error) {
	r := CPURun{Scenario: scenario, Sockets: sockets, Procs: procs, Method: m.Key, Run: run}
	r.TableFrom = h.settle(sockets)
	if m.Kind == SS {
		return h.measureSS(m, r)
	}
	q, err := startQuery(h.cfg.Binary, m.Query(), false)
	if err != nil {
		return r, err
	}
	h.track(q.cmd, true)
	defer h.track(q.cmd, false)
	stop := func() {
		ex := q.stop()
		r.TotalCPU, r.MaxRSSKB, r.Rows = ex.TotalCPU.Seconds(), ex.MaxRSSKB, ex.Rows
	}
	c0, c1, t0, t1, polls, err := h.window(q, m)
	if err != nil {
		stop()
		return r, err
	}
	r.Table, r.NProc = tableSize(), processCount()
	stop()
	r.Window, r.CPU, r.Polls = t1.Sub(t0).Seconds(), (c1 - c0).Seconds(), polls
	if m.Kind == Watch && (r.Rate() > 0.7 || r.PerPoll() > 0.7*m.Period) {
		// A poll runs on one goroutine: near a core's worth of CPU, or polls
		// nearly as long as the period, and the ticker has dropped ticks,
		// so there were fewer polls than counted.
		r.Saturated = true
	}
	if m.Kind == Stock && r.Interval() > 1.5*m.Period {
		r.Saturated = true // diff() sleeps Period after a poll that took long
	}
	return r, nil
}

// settle waits, at most cfg.Settle, until the kernel tables hold about the
// sockets the scenario put there: other people's tests on this shared
// machine come and go with thousands of sockets, which every method has to
// read too. It returns the table size it last saw.
func (h *harness) settle(expected int) int {
	limit := crowdLimit(expected, h.res.Env.BaseTable)
	wait := min(h.cfg.Settle, h.settleLeft)
	start := time.Now()
	defer func() { h.settleLeft -= time.Since(start) }()
	logged := false
	for {
		n := tableSize()
		if n <= limit || h.ctx.Err() != nil {
			return n
		}
		if time.Since(start) >= wait {
			h.logf("going ahead with %d sockets in the tables (%d expected): other processes hold the rest", n, expected)
			return n
		}
		if !logged {
			h.logf("waiting up to %v for other processes' sockets to go away (%d in the tables, %d expected)",
				wait.Round(time.Second), n, expected)
			logged = true
		}
		time.Sleep(2 * time.Second)
	}
}

// again tells whether a measurement should be repeated: other processes'
// sockets crowded the tables before or after it, and the settle budget is
// not spent.
func (h *harness) again(attempt, expected int, tables ...int) bool {
	limit := crowdLimit(expected, h.res.Env.BaseTable)
	for _, n := range tables {
		if n > limit && attempt < 2 && h.settleLeft > 0 && h.ctx.Err() == nil {
			h.logf("other processes' sockets crowded the tables (%d, %d expected): measuring again", n, expected)
			return true
		}
	}
	return false
}

// crowdLimit is the table size above which a scenario meant to have
// expected sockets counts as crowded by other processes: the machine's own
// sockets at the start (at most 2,000: it may have started crowded) plus
// 25 % or 1,000.
func crowdLimit(expected, base int) int {
	return expected + min(base, 2000) + max(1000, expected/4)
}

// window waits out the warmup and measures CPU over the steady-state window.
func (h *harness) window(q *queryProc, m Method) (c0, c1 time.Duration, t0, t1 time.Time, polls int, err error) {
	cfg := h.cfg
	sample := func() (time.Duration, time.Time, error) {
		c, err := taskCPU(q.Pid())
		return c, time.Now(), err
	}
	switch m.Kind {
	case Idle, Kernel, KernelExcl:
		if m.kernel() {
			// Past the start line and the first snapshot (every socket's
			// owner looked up once): the steady state is what counts.
			var ready time.Time
			if ready, err = q.waitReady(h.ctx, 60*time.Second); err != nil {
				return
			}
			if err = sleepUntil(h.ctx, ready.Add(2*time.Second)); err != nil {
				return
			}
		}
		if err = q.warmedUp(h.ctx, cfg.Warmup); err != nil {
			return
		}
		if c0, t0, err = sample(); err != nil {
			return
		}
		if err = sleepUntil(h.ctx, t0.Add(cfg.Window)); err != nil {
			return
		}
		c1, t1, err = sample()
		polls = int(math.Round(t1.Sub(t0).Seconds()))
	case Watch:
		// Ticks come at ready + k*P; sample half a period after a tick, when
		// the poll is long done, so the window holds exactly n polls. The
		// first tick (baseline: every socket's owner looked up) is excluded.
		var ready time.Time
		if ready, err = q.waitReady(h.ctx, 60*time.Second); err != nil {
			return
		}
		p := time.Duration(m.Period * float64(time.Second))
		if err = q.warmedUp(h.ctx, cfg.Warmup); err != nil {
			return
		}
		earliest := time.Now()
		if e := ready.Add(max(1500*time.Millisecond, 3*p)); e.After(earliest) {
			earliest = e
		}
		k := math.Ceil(float64(earliest.Sub(ready.Add(p/2))) / float64(p))
		ts := ready.Add(p/2 + time.Duration(k)*p)
		polls = max(1, int(math.Round(float64(cfg.Window)/float64(p))))
		if err = sleepUntil(h.ctx, ts); err != nil {
			return
		}
		if c0, t0, err = sample(); err != nil {
			return
		}
		if err = sleepUntil(h.ctx, ts.Add(time.Duration(polls)*p)); err != nil {
			return
		}
		c1, t1, err = sample()
	case Stock:
		// diff() logs "Running query" as each poll starts: sample at a poll
		// start and at a later one, so the window holds whole polls.
		if err = q.warmedUp(h.ctx, cfg.Warmup); err != nil {
			return
		}
		n, _ := q.Polls()
		timeout := 120 * time.Second
		var n0, n1 int
		var tp0, tp time.Time
		if n0, tp0, err = q.waitPoll(h.ctx, n, timeout); err != nil {
			return
		}
		if c0, t0, err = sample(); err != nil {
			return
		}
		n1 = n0
		for tp = tp0; tp.Sub(tp0) < cfg.Window; {
			if n1, tp, err = q.waitPoll(h.ctx, n1, timeout); err != nil {
				return
			}
		}
		c1, t1, err = sample()
		polls = n1 - n0
	}
	return
}

// measureSS runs `ss -tunap` every Period (output discarded) and sums the
// CPU of the ss processes.
func (h *harness) measureSS(m Method, r CPURun) (CPURun, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return r, err
	}
	defer devnull.Close()
	p := time.Duration(m.Period * float64(time.Second))
	t0 := time.Now()
	next := t0
	var cpu time.Duration
	n := 0
	// Calls start every p for a window of whole intervals; a call that
	// takes longer than p delays the next (saturated), and the window ends
	// on time anyway.
	for n == 0 || next.Sub(t0) < h.cfg.Window {
		if err := sleepUntil(h.ctx, next); err != nil {
			return r, err
		}
		start := time.Now()
		cmd := exec.Command("ss", "-tunap")
		cmd.Stdout = devnull
		if err := cmd.Run(); err != nil {
			return r, fmt.Errorf("ss: %w", err)
		}
		n++
		cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > r.MaxRSSKB {
			r.MaxRSSKB = ru.Maxrss
		}
		if time.Since(start) > p {
			r.Saturated = true
		}
		if next = next.Add(p); next.Before(time.Now()) {
			next = time.Now()
		}
	}
	if err := sleepUntil(h.ctx, next); err != nil {
		return r, err
	}
	r.Window, r.CPU, r.Polls = time.Since(t0).Seconds(), cpu.Seconds(), n
	r.TotalCPU = r.CPU
	r.Table, r.NProc = tableSize(), processCount()
	return r, nil
}

// --- memory ------------------------------------------------------------------

func (h *harness) memScenario() error {
	if h.memDone {
		return nil
	}
	hp, err := h.startHolder(h.cfg.MemSize, 0)
	if err != nil {
		return err
	}
	defer h.stopHolder(hp)
	return h.memRuns()
}

func (h *harness) memRuns() error {
	cfg := h.cfg
	for run := 1; run <= cfg.Runs; run++ {
		for _, m := range cfg.MemMethods {
			if run > cfg.runsOf(ScMemory, m) {
				continue
			}
			var r MemRun
			var err error
			for attempt := 0; ; attempt++ {
				r, err = h.measureMem(m, run)
				// At the end the churn's own TIME_WAIT remnants are there.
				if err != nil || !h.again(attempt, cfg.MemSize, r.TableFrom) {
					break
				}
			}
			if err != nil {
				if h.ctx.Err() != nil {
					return err
				}
				r.Err = err.Error()
				h.fail("memory %s run %d: %v", m.Key, run, err)
			} else {
				h.logf("memory  sockets=%-5s churn %d/s %-10s run %d: max RSS %.1f MB, %.2f ms/s CPU, table %d at the end (%s)",
					fmtSockets(r.Sockets), r.ChurnRate, m.Key, run, float64(r.MaxRSSKB)/1024,
					1e3*r.CPU/r.Window, r.Table, r.Churned)
			}
			h.res.Mem = append(h.res.Mem, r)
		}
	}
	return nil
}

// measureMem runs a method while the churn helper opens and closes
// connections on top of the held sockets, and keeps its max RSS.
func (h *harness) measureMem(m Method, run int) (MemRun, error) {
	cfg := h.cfg
	r := MemRun{Method: m.Key, Run: run, Sockets: cfg.MemSize, ChurnRate: cfg.ChurnRate,
		ChurnSecs: cfg.ChurnFor.Seconds()}
	// The previous run's churn leaves TIME_WAIT remnants for a minute.
	r.TableFrom = h.settle(cfg.MemSize)
	q, err := startQuery(cfg.Binary, m.Query(), false)
	if err != nil {
		return r, err
	}
	h.track(q.cmd, true)
	defer h.track(q.cmd, false)
	stop := func() {
		ex := q.stop()
		r.MaxRSSKB = ex.MaxRSSKB
	}
	// Steady state first (baseline poll done), then churn.
	if err := q.warmedUp(h.ctx, cfg.Warmup); err != nil {
		stop()
		return r, err
	}
	switch m.Kind {
	case Watch, Kernel, KernelExcl:
		ready, err := q.waitReady(h.ctx, 60*time.Second)
		if err == nil {
			err = sleepUntil(h.ctx, ready.Add(max(2*time.Second, time.Duration(3*m.Period*float64(time.Second)))))
		}
		if err != nil {
			stop()
			return r, err
		}
	case Stock:
		if _, _, err := q.waitPoll(h.ctx, 0, 120*time.Second); err != nil {
			stop()
			return r, err
		}
	}
	c0, _ := taskCPU(q.Pid())
	t0 := time.Now()
	cmd := exec.Command(h.helper("churn"), "churn", "-rate", fmt.Sprint(cfg.ChurnRate),
		"-for", cfg.ChurnFor.String())
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		stop()
		return r, err
	}
	h.track(cmd, true)
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case r.Churned = <-line:
	case <-time.After(cfg.ChurnFor + time.Minute):
		r.Churned = "churn helper did not finish"
	case <-h.ctx.Done():
	}
	stdin.Close()
	waitOrKill(cmd, 10*time.Second)
	h.track(cmd, false)
	c1, _ := taskCPU(q.Pid())
	r.CPU, r.Window = (c1 - c0).Seconds(), time.Since(t0).Seconds()
	r.Table = tableSize()
	stop()
	if h.ctx.Err() != nil {
		return r, h.ctx.Err()
	}
	if !strings.HasPrefix(r.Churned, "DONE") {
		return r, errors.New(r.Churned)
	}
	return r, nil
}

// --- capture -----------------------------------------------------------------

func (h *harness) captureScenario() error {
	for run := 1; run <= h.cfg.Runs; run++ {
		for _, m := range rotate(h.cfg.CaptureMethods, run-1) {
			var cr CaptureRun
			var conns []ConnResult
			var err error
			for attempt := 0; ; attempt++ {
				cr, conns, err = h.measureCapture(m, run)
				if err != nil || !h.again(attempt, 0, cr.TableFrom, cr.TableTo) {
					break
				}
			}
			if err != nil {
				if h.ctx.Err() != nil {
					return err
				}
				cr.Err = err.Error()
				h.fail("capture %s run %d: %v", m.Key, run, err)
			} else {
				s := summarizeConns(conns)
				h.logf("capture %-10s run %d: %d connections, %d reported, %d once with the right Pid+Name, %d duplicates, %.2f ms/s CPU",
					m.Key, run, s.N, s.Reported, s.OnceRight, s.Dups, 1e3*cr.CPU/cr.Window)
			}
			h.res.Capture = append(h.res.Capture, cr)
			h.res.Conns = append(h.res.Conns, conns...)
		}
	}
	return nil
}

// measureCapture launches short-lived processes, each with one loopback
// connection of a known lifetime, while the method watches, and matches
// what the method reported against what was launched.
func (h *harness) measureCapture(m Method, run int) (CaptureRun, []ConnResult, error) {
	cfg := h.cfg
	cr := CaptureRun{Method: m.Key, Run: run}
	cr.TableFrom = h.settle(0)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return cr, nil, err
	}
	defer ln.Close()
	go serveUntilEOF(ln)
	port := ln.Addr().(*net.TCPAddr).Port

	q, err := startQuery(cfg.Binary, m.Query(), true)
	if err != nil {
		return cr, nil, err
	}
	q.watch(port)
	h.track(q.cmd, true)
	defer h.track(q.cmd, false)
	fail := func(err error) (CaptureRun, []ConnResult, error) {
		q.stop()
		return cr, nil, err
	}
	// Start launching once the baseline poll is behind us.
	if err := h.steady(q, m); err != nil {
		return fail(err)
	}
	period := m.period()
	c0, _ := taskCPU(q.Pid())
	t0 := time.Now()
	launched, err := h.launchConns(port, run)
	if err != nil {
		return fail(err)
	}
	// Wait for the last reports: one period (two for diff(), which sleeps a
	// period after each poll), plus the 1 s output batching.
	tail := 2*period + 2*time.Second
	if err := sleepUntil(h.ctx, time.Now().Add(tail)); err != nil {
		return fail(err)
	}
	if err := q.waitQuiet(h.ctx, period+1500*time.Millisecond, 30*time.Second); err != nil {
		return fail(err)
	}
	c1, _ := taskCPU(q.Pid())
	cr.CPU, cr.Window = (c1 - c0).Seconds(), time.Since(t0).Seconds()
	cr.TableTo = tableSize()
	ex := q.stop()
	cr.Rows, cr.MaxRSSKB, cr.Conns = ex.Rows, ex.MaxRSSKB, len(launched)
	host, err := netnsInode("/proc/self/ns/net")
	if err != nil {
		return cr, nil, err
	}
	results := matchCapture(launched, ex.RowData, port, host)
	for i := range results {
		results[i].Method, results[i].Run = m.Key, run
	}
	markReused(results)
	return cr, results, nil
}

func serveUntilEOF(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			buf := make([]byte, 512)
			c.SetReadDeadline(time.Now().Add(time.Minute))
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			c.Close()
		}()
	}
}

// launchConns starts cfg.CaptureConns child processes at cfg.CaptureRate per
// second on average (Poisson), lifetimes cycling through cfg.Lifetimes in a
// shuffled order, and
// returns them once all have exited.
func (h *harness) launchConns(port, run int) ([]Launched, error) {
	cfg := h.cfg
	rng := rand.New(rand.NewSource(int64(run)))
	order := make([]time.Duration, 0, cfg.CaptureConns)
	for len(order) < cfg.CaptureConns {
		block := append([]time.Duration(nil), cfg.Lifetimes...)
		rng.Shuffle(len(block), func(i, j int) { block[i], block[j] = block[j], block[i] })
		order = append(order, block...)
	}
	order = order[:cfg.CaptureConns]

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	out := make([]Launched, len(order))
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	// Poisson arrivals: launches at a fixed interval would be phase-locked
	// to the method's ticks and see every connection at the same phase.
	next := time.Now()
	for i, life := range order {
		if err := sleepUntil(h.ctx, next); err != nil {
			return nil, err
		}
		next = next.Add(time.Duration(math.Min(rng.ExpFloat64(), 5) / cfg.CaptureRate * float64(time.Second)))
		cmd := exec.Command(h.helper("conn"), "conn", "-addr", addr, "-life", life.String())
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		cmd.Stderr = os.Stderr
		out[i] = Launched{Lifetime: life, Launched: time.Now()}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		out[i].Pid = cmd.Process.Pid
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var port int
			var name string
			n, err := fmt.Fscan(stdout, &port, &name)
			if n == 2 {
				out[i].Port, out[i].Name = port, name
			}
			waitOrKill(cmd, life+10*time.Second)
			out[i].Exited = time.Now()
			if n != 2 {
				errs[i] = fmt.Errorf("child %d (%v): no port reported: %v", i, life, err)
			}
		}(i)
	}
	wg.Wait()
	var bad []Launched
	for i, err := range errs {
		if err != nil {
			if len(bad) == 0 {
				h.logf("capture: %v", err)
			}
			bad = append(bad, out[i])
		}
	}
	if len(bad) > len(out)/20 {
		return nil, fmt.Errorf("%d of %d children failed to connect", len(bad), len(out))
	}
	good := out[:0]
	for _, l := range out {
		if l.Port != 0 {
			good = append(good, l)
		}
	}
	return good, nil
}

// --- environment -------------------------------------------------------------

func (h *harness) env() Env {
	e := Env{Start: time.Now(), NCPU: runtime.NumCPU(), GoVersion: runtime.Version(),
		BaseTable: tableSize(), BaseProcs: processCount(), Load1Start: load1(),
		HarnessCommand: strings.Join(os.Args, " ")}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				e.CPUModel = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_tw_reuse"); err == nil {
		e.TwReuse = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		e.EphemeralPorts = strings.Join(strings.Fields(string(b)), "-")
	}
	if b, err := exec.Command(h.cfg.Binary, "version").Output(); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "version:") || strings.HasPrefix(l, "commit:") {
				e.Velociraptor += strings.TrimSpace(l) + " "
			}
		}
		e.Velociraptor = strings.TrimSpace(e.Velociraptor)
	}
	if b, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		e.GitRev = strings.TrimSpace(string(b))
	}
	return e
}

func load1() float64 {
	var l float64
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Sscan(string(b), &l)
	}
	return l
}
