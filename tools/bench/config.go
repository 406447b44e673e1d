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
	SS     Kind = "ss"    // ss -tunap, no Velociraptor: an outside reference
	Idle   Kind = "idle"  // a query that reads nothing: the baseline
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
}

func (c *Config) want(scenario string) bool { return c.Only == nil || c.Only[scenario] }

var allLifetimes = []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 100 * time.Millisecond,
	300 * time.Millisecond, time.Second, 5 * time.Second}

func fullConfig() *Config {
	return &Config{
		Runs:        3,
		Settle:      10 * time.Minute,
		SettleTotal: 30 * time.Minute,
		Warmup:      3 * time.Second,
		Window:      8 * time.Second,
		Sizes:       []int{1024, 4096, 16384, 65536},
		CPUMethods: []Method{idleMethod, stock(2), stock(1),
			nw(1), nw(0.5), nw(0.25), nw(0.1), nw(0.05), ebpfMethod, ssm(1), ssm(0.1)},
		ProcSize:       1024,
		ProcCounts:     []int{50, 500},
		ProcFds:        4,
		ProcMethod:     []Method{idleMethod, stock(1), nw(1), nw(0.1), ebpfMethod, ssm(1)},
		Lifetimes:      allLifetimes,
		CaptureRate:    10,
		CaptureConns:   200,
		CaptureMethods: []Method{stock(2), stock(1), nw(1), nw(0.5), nw(0.25), nw(0.1), nw(0.05), ebpfMethod},
		MemSize:        65536,
		ChurnRate:      500,
		ChurnFor:       60 * time.Second,
		MemMethods:     []Method{nw(0.1), nw(1), ebpfMethod, stock(1)},
		MemRunsOnly:    map[string]int{nw(1).Key: 1, stock(1).Key: 1},
	}
}

// quickConfig keeps one of everything so the harness and the report are
// exercised end to end in under three minutes; its figures are indicative.
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
	}
}
