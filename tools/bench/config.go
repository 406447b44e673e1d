//go:build linux

package main

import (
	"fmt"
	"strconv"
	"time"
)

// Kind is how a method watches connections. The values are those of the
// raw results files (Method.Kind, and the prefix of Method.Key).
type Kind string

const (
	Stock  Kind = "stock" // the exchange artifact's diff(netstat()) query
	Watch  Kind = "nw"    // netstat_watch() polling (backend=netlink)
	Kernel Kind = "ebpf"  // netstat_watch() with kernel events (backend=ebpf)
	// KernelExcl is Kernel with loopback excluded in the plugin, as the
	// client artifact passes it: what watching costs when no row is
	// built. CPU only (it reports none of the harness's connections).
	KernelExcl Kind = "ebpf-excl"
	SS         Kind = "ss"   // ss -tunap, no Velociraptor: an outside reference
	Idle       Kind = "idle" // a query that reads nothing: the baseline
)

// Method is one way of watching connections: a kind at a period. Build one
// with method(); its Key is derived, never written by hand.
type Method struct {
	Key    string  // stable id: stock-1s, nw-0.1s, ss-1s, idle
	Kind   Kind    //
	Period float64 // seconds
}

func (m Method) Label() string {
	p := strconv.FormatFloat(m.Period, 'f', -1, 64) + " s"
	switch m.Kind {
	case Stock:
		return "stock diff(netstat()) " + p
	case Watch:
		return "netstat_watch " + p
	case Kernel:
		return "netstat_watch kernel events"
	case KernelExcl:
		return "netstat_watch kernel events, loopback excluded in the plugin (CPU only)"
	case SS:
		return "ss -tunap every " + p
	}
	return "idle query"
}

// StockQuery is the query of the original exchange artifact
// Generic.Events.TrackNetworkConnections (Velocidex/velociraptor-docs,
// content/exchange/artifacts/Generic.Events.TrackNetworkConnections.yaml),
// with its Period parameter substituted.
func StockQuery(period int) string {
	return `LET NetworkConnections = SELECT *, format(format="%v %v %v %v %v %v %v", ` +
		`args=[Pid, Family, Type, Laddr.IP, Laddr.Port, Raddr.IP, Raddr.Port]) AS DiffKey FROM netstat()` + "\n" +
		fmt.Sprintf(`LET EventQuery = SELECT * FROM diff(query=NetworkConnections, period=%d, key="DiffKey")`, period) + "\n" +
		`SELECT *, process_tracker_get(id=Pid) AS ProcInfo FROM EventQuery`
}

const idleQuery = `SELECT * FROM clock(period=1)`

// Query is the VQL a method runs (ss runs no query).
func (m Method) Query() string {
	switch m.Kind {
	case Stock:
		return StockQuery(int(m.Period))
	case Watch:
		// Polling pinned: backend auto takes kernel events where they load.
		return fmt.Sprintf("SELECT * FROM netstat_watch(period=%s, backend='netlink')",
			strconv.FormatFloat(m.Period, 'f', -1, 64))
	case Kernel:
		return "SELECT * FROM netstat_watch(backend='ebpf')"
	case KernelExcl:
		return "SELECT * FROM netstat_watch(backend='ebpf', exclude_loopback=TRUE)"
	case Idle:
		return idleQuery
	}
	return ""
}

// method is the method of that kind and period.
func method(k Kind, period float64) Method {
	if k == Idle {
		return Method{string(Idle), Idle, 1}
	}
	return Method{string(k) + "-" + strconv.FormatFloat(period, 'f', -1, 64) + "s", k, period}
}

func stock(p int) Method   { return method(Stock, float64(p)) }
func nw(p float64) Method  { return method(Watch, p) }
func ssm(p float64) Method { return method(SS, p) }

var idleMethod = method(Idle, 1)

// ebpfMethod: kernel events, with the default reconciling snapshot (15 s)
// and UDP polled every second; Period only paces the harness's waits.
var ebpfMethod = Method{string(Kernel), Kernel, 1}

// ebpfExclMethod: ebpfMethod with the loopback connections (all of the
// harness's) dropped inside the plugin.
var ebpfExclMethod = Method{string(KernelExcl), KernelExcl, 1}

// kernel reports whether a method is netstat_watch with kernel events.
func (m Method) kernel() bool { return m.Kind == Kernel || m.Kind == KernelExcl }

// Scenario is one step of a harness run, named as -only takes it.
type Scenario string

const (
	ScProcs   Scenario = "procs"   // CPU with many idle processes
	ScCapture Scenario = "capture" // connections of known lifetimes, from short-lived processes
	ScCPU     Scenario = "cpu"     // CPU by number of idle sockets
	ScMemory  Scenario = "memory"  // max RSS with 64k sockets and churn
	ScKpace   Scenario = "kpace"   // 1 ms connections at the kernel's pace, both directions, two namespaces
)

// scenarios in the order a run takes them: kpace last, as it leaves tens of
// thousands of TIME_WAIT remnants behind for a minute.
var scenarios = []Scenario{ScProcs, ScCapture, ScCPU, ScMemory, ScKpace}

// Config says what one run of the harness measures.
type Config struct {
	Quick   bool
	Binary  string          `json:"-"`
	Verbose bool            `json:"-"`
	Only    map[string]bool `json:"-"`
	Runs    int

	Warmup      time.Duration // from process start to the first CPU sample (at least)
	Settle      time.Duration // longest wait for other processes' sockets to go away before a measurement
	SettleTotal time.Duration // ... over the whole run
	Window      time.Duration // steady-state measurement window

	Sizes      []int    // sockets held for the CPU figure
	CPUMethods []Method // at every size
	ProcSize   int      // sockets held in the process-count scenario
	ProcCounts []int    // idle processes
	ProcFds    int      // non-socket fds each idle process holds
	ProcMethod []Method

	Lifetimes      []time.Duration
	CaptureRate    float64 // child processes launched per second
	CaptureConns   int     // per run
	CaptureMethods []Method

	MemSize     int
	ChurnRate   int // connections opened (and closed) per second
	ChurnFor    time.Duration
	MemMethods  []Method
	MemRunsOnly map[string]int // runs per method for the memory figure (default Runs)

	KpaceRate     float64       // child processes (one connection each) asked for per second
	KpaceFor      time.Duration // launching time per measurement
	KpaceLife     time.Duration // each connection's lifetime
	KpaceMethods  []Method
	KpaceRunsOnly map[string]int // runs per method (default Runs)
}

func (c *Config) want(s Scenario) bool { return c.Only == nil || c.Only[string(s)] }

// methods are the methods a scenario measures.
func (c *Config) methods(s Scenario) []Method {
	switch s {
	case ScProcs:
		return c.ProcMethod
	case ScCapture:
		return c.CaptureMethods
	case ScCPU:
		return c.CPUMethods
	case ScMemory:
		return c.MemMethods
	case ScKpace:
		return c.KpaceMethods
	}
	return nil
}

// runsOf is how many repetitions of m a scenario makes.
func (c *Config) runsOf(s Scenario, m Method) int {
	only := map[Scenario]map[string]int{ScMemory: c.MemRunsOnly, ScKpace: c.KpaceRunsOnly}[s]
	if n, ok := only[m.Key]; ok {
		return min(n, c.Runs)
	}
	return c.Runs
}

var allLifetimes = []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 100 * time.Millisecond,
	300 * time.Millisecond, time.Second, 5 * time.Second}

// fullConfig is `make bench`: at most 50 minutes on this 2-core machine
// (estimate() models it; the methods left out since the first runs are in
// the report's `trimmed`).
func fullConfig() *Config {
	return &Config{
		Runs:           3,
		Settle:         10 * time.Minute,
		SettleTotal:    30 * time.Minute,
		Warmup:         3 * time.Second,
		Window:         8 * time.Second,
		Sizes:          []int{1024, 4096, 16384, 65536},
		CPUMethods:     []Method{idleMethod, stock(1), nw(1), nw(0.25), nw(0.1), ebpfMethod, ssm(1)},
		ProcSize:       1024,
		ProcCounts:     []int{500},
		ProcFds:        4,
		ProcMethod:     []Method{stock(1), nw(1), nw(0.1), ebpfMethod}, // the idle baseline is shared by the run
		Lifetimes:      allLifetimes,
		CaptureRate:    10,
		CaptureConns:   200,
		CaptureMethods: []Method{stock(1), nw(1), nw(0.25), nw(0.1), ebpfMethod},
		MemSize:        65536,
		ChurnRate:      500,
		ChurnFor:       60 * time.Second,
		MemMethods:     []Method{nw(0.1), ebpfMethod, stock(1)},
		MemRunsOnly:    map[string]int{nw(0.1).Key: 1, stock(1).Key: 1},
		KpaceRate:      1000,
		KpaceFor:       60 * time.Second,
		KpaceLife:      time.Millisecond,
		KpaceMethods:   []Method{ebpfMethod, ebpfExclMethod, nw(0.1), stock(1)},
		KpaceRunsOnly:  map[string]int{ebpfMethod.Key: 2, ebpfExclMethod.Key: 1, nw(0.1).Key: 1, stock(1).Key: 1},
	}
}

// quickConfig keeps one of everything so the harness and the report are
// exercised end to end in a few minutes; its figures are indicative.
func quickConfig() *Config {
	return &Config{
		Quick:          true,
		Runs:           1,
		Settle:         5 * time.Second,
		SettleTotal:    10 * time.Second,
		Warmup:         2500 * time.Millisecond,
		Window:         3 * time.Second,
		Sizes:          []int{1024, 4096},
		CPUMethods:     []Method{idleMethod, stock(1), nw(1), nw(0.1), ebpfMethod, ssm(1)},
		ProcSize:       1024,
		ProcCounts:     []int{200},
		ProcFds:        4,
		ProcMethod:     []Method{stock(1), nw(0.1)}, // the idle baseline is shared by the run
		Lifetimes:      allLifetimes,
		CaptureRate:    10,
		CaptureConns:   50,
		CaptureMethods: []Method{stock(1), nw(0.1), ebpfMethod},
		MemSize:        16384,
		ChurnRate:      500,
		ChurnFor:       8 * time.Second,
		MemMethods:     []Method{nw(0.1), ebpfMethod},
		KpaceRate:      1000,
		KpaceFor:       8 * time.Second,
		KpaceLife:      time.Millisecond,
		KpaceMethods:   []Method{ebpfMethod, ebpfExclMethod, nw(0.1), stock(1)},
	}
}

// estimate models how long a run of c takes, from what each measurement
// waits for on this machine (a query's startup about 4 s, a holder about
// 1 s per 2,000 sockets, TIME_WAIT remnants of churn a minute), without
// the waits for other processes' sockets to go away. `make bench` must fit
// in 50 minutes; the harness prints the estimate as it starts.
func (c *Config) estimate() time.Duration {
	const startup = 4 * time.Second
	var d time.Duration
	query := func(m Method, window time.Duration) time.Duration {
		if m.Kind == SS {
			return window
		}
		return startup + window + time.Second
	}
	holder := func(n int) time.Duration { return 2*time.Second + time.Duration(n/2000)*time.Second }
	for _, s := range scenarios {
		if !c.want(s) {
			continue
		}
		switch s {
		case ScCPU:
			for _, n := range c.Sizes {
				d += holder(n)
				for _, m := range c.CPUMethods {
					d += time.Duration(c.Runs) * query(m, c.Window)
				}
			}
		case ScProcs:
			for range c.ProcCounts {
				d += holder(c.ProcSize)
				for _, m := range c.ProcMethod {
					d += time.Duration(c.Runs) * query(m, c.Window)
				}
			}
		case ScCapture:
			launch := time.Duration(float64(c.CaptureConns) / c.CaptureRate * float64(time.Second))
			for _, m := range c.CaptureMethods {
				tail := 3*m.period() + 3500*time.Millisecond
				d += time.Duration(c.Runs) * (query(m, launch) + tail)
			}
		case ScMemory:
			if !c.want(ScCPU) || !containsInt(c.Sizes, c.MemSize) {
				d += holder(c.MemSize)
			}
			for _, m := range c.MemMethods {
				// churn, then its TIME_WAIT remnants going (half of them)
				d += time.Duration(c.runsOf(ScMemory, m)) * (query(m, c.ChurnFor) + 2*time.Second + 30*time.Second)
			}
		case ScKpace:
			for _, m := range c.KpaceMethods {
				tail := 2*m.period() + 3*time.Second
				// the next measurement waits out the remnants: a minute
				d += time.Duration(c.runsOf(ScKpace, m)) * (query(m, c.KpaceFor) + tail + time.Minute)
			}
		}
	}
	return d
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
