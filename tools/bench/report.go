//go:build linux

package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"
)

// The report: docs/BENCHMARKS.md, written from the raw results only, so it
// can be regenerated (-report) without measuring again.

const (
	cpuPlot     = "bench-cpu.png"
	capturePlot = "bench-capture.png"
	kpacePlot   = "bench-kpace.png"
	notesFile   = "tools/bench/notes.md" // hand-written analysis, included verbatim
)

type scKey struct {
	Scenario string
	Sockets  int
	Procs    int
}

type analysis struct {
	res     *Results
	cfg     *Config
	methods map[string]Method
}

func newAnalysis(res *Results) *analysis {
	a := &analysis{res: res, cfg: res.Config, methods: map[string]Method{}}
	markReused(res.Conns) // results saved before the flag existed
	c := res.Config
	for _, list := range [][]Method{c.CPUMethods, c.ProcMethod, c.CaptureMethods, c.MemMethods} {
		for _, m := range list {
			a.methods[m.Key] = m
		}
	}
	return a
}

func (a *analysis) runs(k scKey, method string) []CPURun {
	var out []CPURun
	for _, r := range a.res.CPU {
		if r.Err == "" && r.Scenario == k.Scenario && r.Sockets == k.Sockets &&
			r.Procs == k.Procs && r.Method == method {
			out = append(out, r)
		}
	}
	return out
}

// idle is the median steady-state CPU rate of the idle query over the whole
// run: clock(period=1) reads neither sockets nor /proc, so every scenario
// shares one baseline, which one disturbed repetition cannot skew.
func (a *analysis) idle(scKey) float64 {
	var xs []float64
	for _, r := range a.res.CPU {
		if r.Err == "" && r.Method == idleMethod.Key {
			xs = append(xs, r.Rate())
		}
	}
	s := spread(xs)
	if s.N == 0 {
		return 0
	}
	return s.Med
}

// idleIn is the idle query's rate in one scenario (for context only).
func (a *analysis) idleIn(k scKey) Spread {
	var xs []float64
	for _, r := range a.runs(k, idleMethod.Key) {
		xs = append(xs, r.Rate())
	}
	return spread(xs)
}

// cpuFig is one method in one scenario, net of the idle query.
type cpuFig struct {
	Rate, PerPoll, Table, Interval Spread
	Saturated                      bool
	Crowded                        bool   // other processes' sockets swelled the tables
	RSS                            Spread // MB
}

func (a *analysis) cpu(k scKey, method string) cpuFig {
	idle := 0.0
	if m := a.methods[method]; m.Kind != SS && m.Kind != Idle {
		idle = a.idle(k)
	}
	var rate, per, table, iv, rss []float64
	var f cpuFig
	for _, r := range a.runs(k, method) {
		rate = append(rate, r.Rate()-idle)
		per = append(per, r.PerPoll()-idle*r.Interval())
		table = append(table, float64(r.Table))
		iv = append(iv, r.Interval())
		rss = append(rss, float64(r.MaxRSSKB)/1024)
		f.Saturated = f.Saturated || r.Saturated
		if max(r.Table, r.TableFrom) > crowdLimit(k.Sockets, a.res.Env.BaseTable) {
			f.Crowded = true
		}
	}
	f.Rate, f.PerPoll, f.Table, f.Interval, f.RSS = spread(rate), spread(per), spread(table), spread(iv), spread(rss)
	return f
}

func ms(v float64) string {
	v *= 1e3
	switch {
	case math.IsNaN(v):
		return "–"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// cell prints a spread of seconds as milliseconds: "6.10 (5.90–6.40)".
func cell(s Spread) string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 {
		return ms(s.Med)
	}
	return fmt.Sprintf("%s (%s–%s)", ms(s.Med), ms(s.Min), ms(s.Max))
}

func pct(n, d int) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f %%", 100*float64(n)/float64(d))
}

func verdict(ok bool) string {
	if ok {
		return "**PASS**"
	}
	return "**MISS**"
}

func (a *analysis) sizeKey(n int) scKey { return scKey{"sockets", n, 0} }

func fmtCount(v float64) string {
	if v >= 10000 {
		return fmt.Sprintf("%.0fk", v/1000)
	}
	if v >= 1000 {
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

// conns returns the capture results of a method (lifeMS < 0: all lifetimes).
func (a *analysis) conns(method string, lifeMS int) []ConnResult {
	var out []ConnResult
	for _, c := range a.res.Conns {
		if c.Method == method && (lifeMS < 0 || c.LifeMS == lifeMS) {
			out = append(out, c)
		}
	}
	return out
}

func (a *analysis) memSpread(method string) Spread {
	var xs []float64
	for _, r := range a.res.Mem {
		if r.Method == method && r.Err == "" {
			xs = append(xs, float64(r.MaxRSSKB)/1024)
		}
	}
	return spread(xs)
}

// --- writing -----------------------------------------------------------------

// --- writing -----------------------------------------------------------------

//go:embed report.md.tmpl
var reportTemplate string

var reportTmpl = template.Must(template.New("report").Parse(reportTemplate))

func writeReport(res *Results, out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	a := newAnalysis(res)
	if err := a.plots(out); err != nil {
		return err
	}
	v := a.view()
	var b bytes.Buffer
	if err := reportTmpl.Execute(&b, v); err != nil {
		return err
	}
	path := filepath.Join(out, "BENCHMARKS.md")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return err
	}
	// A target with no figure is a benchmark that measured nothing for it
	// (a scenario skipped, a method or period renamed in the config):
	// written, so that it can be read, but a failure.
	var missing []string
	for _, t := range v.Targets {
		if t.Missing {
			missing = append(missing, "\n  - "+t.Name+": "+t.Figure)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s written, but no figure for %d target(s):%s", path, len(missing), strings.Join(missing, ""))
	}
	return nil
}

// table is a markdown table of the report; the template draws it.
type table struct {
	Head  []string
	Align []string // "---" or "---:" per column
	Rows  [][]string
}

// newTable: the first column left-aligned, the others right.
func newTable(head ...string) *table {
	t := &table{Head: head, Align: []string{"---"}}
	for range head[1:] {
		t.Align = append(t.Align, "---:")
	}
	return t
}

func (t *table) add(cells ...string) { t.Rows = append(t.Rows, cells) }

// reportView is what the template (report.md.tmpl) reads: every figure
// already formatted, every table built.
type reportView struct {
	Quick                       bool
	Start, Elapsed              string
	Runs                        int
	Targets                     []target
	Failures                    []string
	Rec                         recommendation
	CPUPlot, CapturePlot        string
	KpacePlot                   string
	CPURate, CPUPerPoll, CPUCtx *table
	Settle, SettleTotal         time.Duration
	Window, Warmup              time.Duration
	ProcSize                    string
	ProcFds                     int
	Procs                       *table
	CaptureRate                 float64
	CaptureConns                int
	Capture, CaptureCPU         *table
	MemSize                     string
	ChurnRate                   int
	ChurnFor                    time.Duration
	Mem                         *table
	SS                          string
	Kpace                       *kpaceView
	Env                         Env
	StockQuery, IdleQuery       string
	CrowdedCaptures, NCaptures  int
	RawPath                     string
	Trimmed                     []string
	Notes                       string
}

func (a *analysis) view() *reportView {
	res, cfg := a.res, a.cfg
	v := &reportView{
		Quick: cfg.Quick, Runs: cfg.Runs,
		Start:   res.Env.Start.UTC().Format("2006-01-02 15:04 MST"),
		Elapsed: res.Elapsed().Round(time.Second).String(),
		Targets: a.targets(), Failures: res.Failures, Rec: a.recommend(),
		CPUPlot: cpuPlot, CapturePlot: capturePlot, KpacePlot: kpacePlot,
		Settle: cfg.Settle, SettleTotal: cfg.SettleTotal, Window: cfg.Window, Warmup: cfg.Warmup,
		ProcSize: fmtSockets(cfg.ProcSize), ProcFds: cfg.ProcFds,
		CaptureRate: cfg.CaptureRate, CaptureConns: cfg.CaptureConns,
		MemSize: fmtSockets(cfg.MemSize), ChurnRate: cfg.ChurnRate, ChurnFor: cfg.ChurnFor,
		Kpace: a.kpaceView(), Env: res.Env,
		StockQuery: strings.ReplaceAll(StockQuery(1), "\n", "\n    "), IdleQuery: idleQuery,
		NCaptures: len(res.Capture), RawPath: "build/bench/results.json", Trimmed: trimmed,
	}
	a.cpuTables(v)
	v.Procs = a.procTable()
	v.Capture, v.CaptureCPU = a.captureTables()
	v.Mem = a.memTable()
	if f, g := a.cpu(a.sizeKey(4096), ssm(1).Key), a.cpu(a.sizeKey(4096), nw(1).Key); f.PerPoll.N > 0 && g.PerPoll.N > 0 {
		v.SS = fmt.Sprintf("at 4k sockets one `ss` call costs %s ms of CPU, one netstat_watch tick %s ms.", ms(f.PerPoll.Med), ms(g.PerPoll.Med))
	}
	for _, r := range res.Capture {
		if max(r.TableFrom, r.TableTo) > crowdLimit(0, res.Env.BaseTable) {
			v.CrowdedCaptures++
		}
	}
	if notes, err := os.ReadFile(notesFile); err == nil {
		v.Notes = strings.TrimSpace(string(notes))
	}
	return v
}

func (a *analysis) cpuTables(v *reportView) {
	cfg := a.cfg
	head := []string{"method"}
	for _, n := range cfg.Sizes {
		head = append(head, fmtSockets(n)+" sockets")
	}
	rows := func(value func(cpuFig) Spread) *table {
		t := newTable(head...)
		for _, m := range cfg.CPUMethods {
			if m.Kind == Idle {
				continue
			}
			row := []string{m.Label()}
			for _, n := range cfg.Sizes {
				f := a.cpu(a.sizeKey(n), m.Key)
				row = append(row, cell(value(f))+marks(f))
			}
			t.add(row...)
		}
		return t
	}
	v.CPURate = rows(func(f cpuFig) Spread { return f.Rate })
	v.CPUPerPoll = rows(func(f cpuFig) Spread { return f.PerPoll })

	ctx := newTable(append([]string{""}, head[1:]...)...)
	rowOf := func(label string, f func(n int) string) {
		row := []string{label}
		for _, n := range cfg.Sizes {
			row = append(row, f(n))
		}
		ctx.add(row...)
	}
	rowOf("sockets in the kernel tables (held + the machine's own)", func(n int) string {
		return fmtCount(a.cpu(a.sizeKey(n), nw(1).Key).Table.Med)
	})
	rowOf(fmt.Sprintf("idle query in this scenario, ms/s (the median over the whole run, %s ms/s, is subtracted)", ms(a.idle(scKey{}))),
		func(n int) string { return cell(a.idleIn(a.sizeKey(n))) })
	rowOf("stock 1 s: seconds between two diff() runs", func(n int) string {
		return fmt.Sprintf("%.2f", a.cpu(a.sizeKey(n), stock(1).Key).Interval.Med)
	})
	v.CPUCtx = ctx
}

func (a *analysis) procTable() *table {
	cfg := a.cfg
	head := []string{"method", "no extra processes"}
	for _, n := range cfg.ProcCounts {
		head = append(head, fmt.Sprintf("%d processes", n))
	}
	t := newTable(head...)
	for _, m := range cfg.ProcMethod {
		if m.Kind == Idle {
			continue
		}
		f := a.cpu(a.sizeKey(cfg.ProcSize), m.Key)
		row := []string{m.Label(), cell(f.Rate) + marks(f)}
		for _, n := range cfg.ProcCounts {
			f := a.cpu(scKey{"procs", cfg.ProcSize, n}, m.Key)
			row = append(row, cell(f.Rate)+marks(f))
		}
		t.add(row...)
	}
	row := []string{"processes on the machine", fmtCount(a.nprocMed(a.sizeKey(cfg.ProcSize)))}
	for _, n := range cfg.ProcCounts {
		row = append(row, fmtCount(a.nprocMed(scKey{"procs", cfg.ProcSize, n})))
	}
	t.add(row...)
	return t
}

func (a *analysis) captureTables() (conns, cpu *table) {
	cfg := a.cfg
	conns = newTable("method", "lifetime", "n", "reported", "right Pid", "right Pid + Name", "once and right",
		"duplicates per reported", "first row Pid -1", "port reused")
	for _, m := range cfg.CaptureMethods {
		for _, life := range cfg.Lifetimes {
			s := summarizeConns(a.conns(m.Key, int(life/time.Millisecond)))
			if s.N == 0 {
				continue
			}
			conns.add(m.Label(), fmtLife(life), fmt.Sprint(s.N), pct(s.Reported, s.N), pct(s.RightPid, s.N),
				pct(s.RightName, s.N), pct(s.OnceRight, s.N), dupsPer(s), pct(s.Orphan, s.Reported), fmt.Sprint(s.Reused))
		}
	}
	cpu = newTable("method", "CPU")
	for _, m := range cfg.CaptureMethods {
		var xs []float64
		for _, r := range a.res.Capture {
			if r.Method == m.Key && r.Err == "" && r.Window > 0 {
				xs = append(xs, r.CPU/r.Window)
			}
		}
		cpu.add(m.Label(), cell(spread(xs)))
	}
	return conns, cpu
}

func dupsPer(s connSummary) string {
	if s.Reported == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", float64(s.Dups)/float64(s.Reported))
}

func (a *analysis) memTable() *table {
	t := newTable("method", "runs", "max RSS, MB", "CPU during churn, ms/s", "sockets in the tables at the start", "… at the end")
	for _, m := range a.cfg.MemMethods {
		var rss, cpu, from, tab []float64
		for _, r := range a.res.Mem {
			if r.Method == m.Key && r.Err == "" {
				rss = append(rss, float64(r.MaxRSSKB)/1024)
				cpu = append(cpu, r.CPU/r.Window)
				from = append(from, float64(r.TableFrom))
				tab = append(tab, float64(r.Table))
			}
		}
		s := spread(rss)
		t.add(m.Label(), fmt.Sprint(s.N), mbCell(s), cell(spread(cpu)), fmtCount(spread(from).Med), fmtCount(spread(tab).Med))
	}
	if s := a.idleRSS(); s.N > 0 {
		t.add("idle query, for reference (`clock(period=1)`)", fmt.Sprint(s.N), mbCell(s), "–", "–", "–")
	}
	return t
}

func marks(f cpuFig) string {
	m := ""
	if f.Crowded {
		m += " †"
	}
	if f.Saturated {
		m += " ‡"
	}
	return m
}

func mbCell(s Spread) string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 {
		return fmt.Sprintf("%.1f", s.Med)
	}
	return fmt.Sprintf("%.1f (%.1f–%.1f)", s.Med, s.Min, s.Max)
}

func (a *analysis) idleRSS() Spread {
	var xs []float64
	for _, r := range a.res.CPU {
		if r.Method == idleMethod.Key && r.Err == "" {
			xs = append(xs, float64(r.MaxRSSKB)/1024)
		}
	}
	return spread(xs)
}

func (a *analysis) nprocMed(k scKey) float64 {
	var xs []float64
	for _, r := range a.res.CPU {
		if r.Err == "" && r.Scenario == k.Scenario && r.Sockets == k.Sockets && r.Procs == k.Procs {
			xs = append(xs, float64(r.NProc))
		}
	}
	return spread(xs).Med
}

func fmtLife(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d/time.Millisecond)
	}
	return fmt.Sprintf("%g s", d.Seconds())
}

// recommendation is the client artifact's default period, picked from the
// figures by the rule the report states.
type recommendation struct {
	Period  string   // "" when none meets the rule
	Stock2  string   // ms/s of stock at 2 s, 4k sockets
	Lines   []string // one per measured period
	Missing string   // why there is no recommendation at all
}

// recommend applies the rule: the shortest measured period that (1) meets
// the capture target, (2) costs at most 1 % of a core at 1k sockets (a
// typical endpoint has fewer) and (3) at 4k sockets costs less than the
// stock artifact at its own default period (2 s).
func (a *analysis) recommend() recommendation {
	cfg := a.cfg
	var nws []Method
	for _, m := range cfg.CPUMethods {
		if m.Kind == Watch {
			nws = append(nws, m)
		}
	}
	sort.Slice(nws, func(i, j int) bool { return nws[i].Period < nws[j].Period })
	stock2 := a.cpu(a.sizeKey(4096), stock(2).Key).Rate
	if stock2.N == 0 {
		stock2 = a.cpu(a.sizeKey(4096), stock(1).Key).Rate
		if stock2.N > 0 {
			stock2.Med /= 2 // at most: half the polls
		}
	}
	var r recommendation
	for _, m := range nws {
		c1, c4 := a.cpu(a.sizeKey(1024), m.Key).Rate, a.cpu(a.sizeKey(4096), m.Key).Rate
		if c1.N == 0 || c4.N == 0 || stock2.N == 0 {
			continue
		}
		long, _, _ := a.byLifetime(m)
		s := summarizeConns(long)
		capOK := s.N > 0 && float64(s.OnceRight) >= 0.99*float64(s.N)
		capTxt := "capture not measured"
		if s.N > 0 {
			capTxt = fmt.Sprintf("%s of connections ≥ %s once and right", pct(s.OnceRight, s.N), fmtLife(time.Duration(2*m.Period*float64(time.Second))))
		}
		ok := capOK && c1.Med <= 0.010 && c4.Med < stock2.Med
		r.Lines = append(r.Lines, fmt.Sprintf("%s: %s ms/s at 1k sockets, %s ms/s at 4k; %s%s", m.Label(),
			ms(c1.Med), ms(c4.Med), capTxt, map[bool]string{true: " — meets all three", false: ""}[ok]))
		if ok && r.Period == "" {
			r.Period = strings.TrimPrefix(m.Label(), "netstat_watch ")
		}
	}
	if len(r.Lines) == 0 {
		r.Missing = "CPU at 1k and 4k sockets and stock at 2 s are needed"
	}
	r.Stock2 = ms(stock2.Med)
	return r
}

// trimmed says which methods the full run no longer measures, and why; the
// report's method section prints it.
var trimmed = []string{
	"from the CPU figure, netstat_watch 0.05 s and 0.5 s, `ss` every 0.1 s and stock at 2 s; from the capture figure, netstat_watch 0.05 s and 0.5 s and stock at 2 s: earlier full runs showed they follow the curves of the periods still measured (a poll costs the same at every period), and the run must fit in 50 minutes on this 2-core machine with the kernel-pace scenario added. The recommendation takes stock at 2 s as half of stock at 1 s (at most: half the polls)",
	"from the process figure, `ss`, the idle query (the run's idle baseline comes from the CPU figure) and the 50-process count (500 kept)",
	"from the memory figure, netstat_watch 1 s; netstat_watch 0.1 s and stock are measured once, kernel events every repetition",
	"in the kernel-pace scenario, kernel events (whose targets it holds) are measured twice, kernel events with loopback excluded, netlink polling and stock once each: a measurement is a minute of launching plus a minute for its TIME_WAIT remnants to go",
}

// --- plots -------------------------------------------------------------------

func (a *analysis) plots(out string) error {
	cfg := a.cfg
	// CPU vs sockets, log-log.
	var series []Series
	ymin, ymax := math.Inf(1), math.Inf(-1)
	i := 0
	for _, m := range cfg.CPUMethods {
		if m.Kind == Idle {
			continue
		}
		s := Series{Name: m.Label(), Color: methodColor(m, i), Dashed: m.Kind != Watch && !m.kernel(), Marker: i}
		i++
		for _, n := range cfg.Sizes {
			f := a.cpu(a.sizeKey(n), m.Key)
			if f.Rate.N == 0 {
				continue
			}
			s.X = append(s.X, float64(n))
			s.Y, s.Lo, s.Hi = append(s.Y, f.Rate.Med*1e3), append(s.Lo, f.Rate.Min*1e3), append(s.Hi, f.Rate.Max*1e3)
			for _, v := range []float64{f.Rate.Min * 1e3, f.Rate.Max * 1e3} {
				if v > 0 {
					ymin, ymax = math.Min(ymin, v), math.Max(ymax, v)
				}
			}
		}
		series = append(series, s)
	}
	if math.IsInf(ymin, 0) {
		ymin, ymax = 0.1, 1000
	}
	ymin = math.Pow(10, math.Floor(math.Log10(ymin)))
	ymax = math.Pow(10, math.Ceil(math.Log10(ymax)))
	var xt []Tick
	for _, n := range cfg.Sizes {
		xt = append(xt, Tick{float64(n), fmtSockets(n)})
	}
	xmin, xmax := float64(cfg.Sizes[0])/1.5, float64(cfg.Sizes[len(cfg.Sizes)-1])*1.5
	if len(cfg.Sizes) == 1 {
		xmin, xmax = float64(cfg.Sizes[0])/4, float64(cfg.Sizes[0])*4
	}
	cpuChart := &Chart{
		Title:  "CPU per second of monitoring (net of an idle query)",
		XLabel: "open sockets held (log)", YLabel: "ms of CPU per second (log)",
		LogX: true, LogY: true, XMin: xmin, XMax: xmax, YMin: ymin, YMax: ymax,
		XTicks: xt, YTicks: logTicks(ymin, ymax, func(v float64) string { return fmt.Sprintf("%g", v) }),
		Series: series,
		Notes:  []string{"median of " + fmt.Sprint(cfg.Runs) + " run(s), whiskers min-max", "1000 ms/s = one core", "dashed: stock diff(netstat()) and ss -tunap (no Velociraptor)"},
	}
	if err := savePNG(filepath.Join(out, cpuPlot), 1000, 620, cpuChart); err != nil {
		return err
	}

	// Capture vs lifetime.
	mk := func(title string, pick func(connSummary) int) *Chart {
		var ss []Series
		for i, m := range cfg.CaptureMethods {
			s := Series{Name: m.Label(), Color: methodColor(m, i), Marker: i, Dashed: m.Kind != Watch && !m.kernel()}
			for _, life := range cfg.Lifetimes {
				cs := summarizeConns(a.conns(m.Key, int(life/time.Millisecond)))
				if cs.N == 0 {
					continue
				}
				s.X = append(s.X, float64(life/time.Millisecond))
				s.Y = append(s.Y, 100*float64(pick(cs))/float64(cs.N))
			}
			ss = append(ss, s)
		}
		var lt []Tick
		for _, l := range cfg.Lifetimes {
			lt = append(lt, Tick{float64(l / time.Millisecond), fmtLife(l)})
		}
		lo, hi := float64(cfg.Lifetimes[0]/time.Millisecond), float64(cfg.Lifetimes[len(cfg.Lifetimes)-1]/time.Millisecond)
		return &Chart{Title: title, XLabel: "connection lifetime (log)", YLabel: "% of connections",
			LogX: true, XMin: lo / 1.5, XMax: hi * 1.5, YMin: 0, YMax: 118, // room for the legend
			XTicks: lt, YTicks: []Tick{{0, "0"}, {20, "20"}, {40, "40"}, {60, "60"}, {80, "80"}, {100, "100"}},
			Series: ss, Notes: []string{"pooled over " + fmt.Sprint(cfg.Runs) + " run(s)", "dashed: stock diff(netstat())"}}
	}
	if err := savePNG(filepath.Join(out, capturePlot), 1000, 520,
		mk("Reported as added at all (any Pid)", func(s connSummary) int { return s.Reported }),
		mk("Reported once, with the right Pid and process Name", func(s connSummary) int { return s.OnceRight })); err != nil {
		return err
	}
	return a.kpacePlot(out)
}

// kpacePlot: share of the kernel-pace connections reported once with the
// right Pid and Name, a bar per method in each direction × namespace.
func (a *analysis) kpacePlot(out string) error {
	cfg := a.cfg
	if len(cfg.KpaceMethods) == 0 {
		return nil
	}
	var rates []float64
	for _, r := range a.res.Kpace {
		if r.Err == "" && r.Method != ebpfExclMethod.Key { // not in the plot
			rates = append(rates, r.Rate())
		}
	}
	reached := ""
	if s := spread(rates); s.N > 0 {
		reached = fmt.Sprintf(" (%.0f/s reached)", s.Med)
	}
	b := &Bars{Title: fmtLife(cfg.KpaceLife) + " connections from exiting processes, " + fmtRate(cfg.KpaceRate) + " asked" + reached + ": reported once with the right Pid and Name",
		YLabel: "% of connections", YMax: 128, // room for the legend
		Notes: []string{"pooled over the runs", "polling and stock see only their own network namespace"}}
	for _, g := range kpaceGroupOrder {
		b.Groups = append(b.Groups, g.Label)
	}
	for i, m := range cfg.KpaceMethods {
		if m.Kind == KernelExcl {
			continue // CPU only
		}
		s := BarSeries{Name: m.Label(), Color: methodColor(m, i)}
		got := map[string]connSummary{}
		for _, g := range a.kpaceGroups(m) {
			got[g.Label] = g.S
		}
		for _, g := range kpaceGroupOrder {
			v := math.NaN()
			if c, ok := got[g.Label]; ok {
				v = 100 * float64(c.OnceRight) / float64(c.N)
			}
			s.Values = append(s.Values, v)
		}
		b.Series = append(b.Series, s)
	}
	return savePNG(filepath.Join(out, kpacePlot), 1000, 520, b)
}

// methodColors: each method's colour in every plot, by kind and period
// (reds for stock, blues to greens for netstat_watch, shorter periods
// lighter, greys for ss). A method not listed takes a palette colour.
var methodColors = map[Kind]map[float64]color.RGBA{
	Stock: {2: {140, 20, 20, 255}, 1: {230, 40, 40, 255}},
	Watch: {1: {20, 60, 160, 255}, 0.5: {40, 130, 220, 255}, 0.25: {20, 170, 190, 255},
		0.1: {30, 150, 50, 255}, 0.05: {140, 190, 30, 255}},
	SS:         {1: {90, 90, 90, 255}, 0.1: {160, 160, 160, 255}},
	Kernel:     {1: {120, 40, 170, 255}},
	KernelExcl: {1: {200, 120, 230, 255}},
}

func methodColor(m Method, i int) color.RGBA {
	if c, ok := methodColors[m.Kind][m.Period]; ok {
		return c
	}
	return palette[i%len(palette)]
}

// --- kernel pace -------------------------------------------------------------

// kpaceGroupOrder: the scenario's connections by direction and namespace.
var kpaceGroupOrder = []struct{ Dir, NS, Label string }{
	{"out", "host", "outbound"}, {"in", "host", "inbound"},
	{"out", "second", "outbound, second netns"}, {"in", "second", "inbound, second netns"},
}

type kpaceGroup struct {
	Label string
	S     connSummary
}

// kpaceGroups summarises a method's kpace connections per group, leaving
// out the groups with none.
func (a *analysis) kpaceGroups(m Method) []kpaceGroup {
	var out []kpaceGroup
	for _, g := range kpaceGroupOrder {
		var cs []ConnResult
		for _, c := range a.res.KpaceConns {
			if c.Method == m.Key && c.Dir == g.Dir && c.Netns == g.NS {
				cs = append(cs, c)
			}
		}
		if s := summarizeConns(cs); s.N > 0 {
			out = append(out, kpaceGroup{g.Label, s})
		}
	}
	return out
}

// kpaceLaunchFig: a method's kpace runs. CPU is the query's, net of the
// idle query; ChildCPU and LauncherCPU are per child, in seconds.
type kpaceLaunchFig struct {
	Rate, CPU, ChildCPU, LauncherCPU Spread
	PerConn                          Spread // query CPU per connection, net of idle
	Launched, Failed, Rows           int
}

func (a *analysis) kpaceLaunch(m Method) kpaceLaunchFig {
	idle := a.idle(scKey{})
	var rate, cpu, per, child, launcher []float64
	var f kpaceLaunchFig
	for _, r := range a.res.Kpace {
		if r.Method != m.Key || r.Err != "" || r.Window <= 0 || r.Launched == 0 {
			continue
		}
		rate = append(rate, r.Rate())
		cpu = append(cpu, r.CPU/r.Window-idle)
		per = append(per, (r.CPU-idle*r.Window)/float64(r.Launched))
		child = append(child, r.ChildCPU/float64(r.Launched))
		launcher = append(launcher, r.LauncherCPU/float64(r.Launched))
		f.Launched += r.Launched
		f.Failed += r.Failed
		f.Rows += r.Rows
	}
	f.Rate, f.CPU, f.PerConn = spread(rate), spread(cpu), spread(per)
	f.ChildCPU, f.LauncherCPU = spread(child), spread(launcher)
	return f
}

func (a *analysis) idleNote() string {
	if a.idleRuns() == 0 {
		return "raw: no idle query in this run"
	}
	return "net of the idle query's " + ms(a.idle(scKey{})) + " ms/s"
}

func (a *analysis) idleRuns() int {
	n := 0
	for _, r := range a.res.CPU {
		if r.Err == "" && r.Method == idleMethod.Key {
			n++
		}
	}
	return n
}

type kpaceView struct {
	Asked, Life, For, Idle string
	Launch, Capture        *table
}

func (a *analysis) kpaceView() *kpaceView {
	cfg := a.cfg
	if len(cfg.KpaceMethods) == 0 {
		return nil
	}
	v := &kpaceView{Asked: fmtRate(cfg.KpaceRate), Life: fmtLife(cfg.KpaceLife), For: cfg.KpaceFor.String(), Idle: a.idleNote(),
		Launch: newTable("method", "runs", "children launched (all runs)", "launched per second (asked: "+fmtRate(cfg.KpaceRate)+")",
			"failed to connect", "CPU of one child, ms", "launcher CPU per child, ms", "query CPU, ms/s", "rows kept (added)"),
		Capture: newTable("method", "connections", "n", "reported", "right Pid + Name", "once and right",
			"duplicates per reported", "first row Pid -1"),
	}
	for _, m := range cfg.KpaceMethods {
		f := a.kpaceLaunch(m)
		v.Launch.add(m.Label(), fmt.Sprint(f.Rate.N), fmt.Sprint(f.Launched), rateCell(f.Rate), fmt.Sprint(f.Failed),
			cell(f.ChildCPU), cell(f.LauncherCPU), cell(f.CPU), fmt.Sprint(f.Rows))
		for _, g := range a.kpaceGroups(m) {
			s := g.S
			v.Capture.add(m.Label(), g.Label, fmt.Sprint(s.N), pct(s.Reported, s.N), pct(s.RightName, s.N),
				pct(s.OnceRight, s.N), dupsPer(s), pct(s.Orphan, s.Reported))
		}
	}
	return v
}

func rateCell(s Spread) string {
	switch s.N {
	case 0:
		return "–"
	case 1:
		return fmt.Sprintf("%.0f", s.Med)
	}
	return fmt.Sprintf("%.0f (%.0f–%.0f)", s.Med, s.Min, s.Max)
}
