//go:build linux

package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The report: docs/BENCHMARKS.md, written from the raw results only, so it
// can be regenerated (-report) without measuring again.

const (
	cpuPlot     = "bench-cpu.png"
	capturePlot = "bench-capture.png"
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

// target is one line of the targets table.
type target struct {
	Name, Figure, Result string
	Missing              bool // no figure in this run: the report fails
}

func (a *analysis) sizeKey(n int) scKey { return scKey{"sockets", n, 0} }

func (a *analysis) targets() []target {
	var ts []target
	cfg := a.cfg
	notMeasured := "not measured in this run"

	// 1. CPU at 0.1 s vs stock at 1 s, 4k sockets.
	{
		t := target{Name: "netstat_watch at 0.1 s costs ≤ 1/5 of stock at 1 s with 4k sockets (stretch 1/20)"}
		nwF, stF := a.cpu(a.sizeKey(4096), nw(0.1).Key), a.cpu(a.sizeKey(4096), stock(1).Key)
		if nwF.Rate.N > 0 && stF.Rate.N > 0 {
			ratio := stF.Rate.Med / nwF.Rate.Med
			t.Figure = fmt.Sprintf("%s ms/s vs %s ms/s of CPU (medians): 1/%.1f", ms(nwF.Rate.Med), ms(stF.Rate.Med), ratio)
			stretch := "stretch 1/20: MISS"
			if ratio >= 20 {
				stretch = "stretch 1/20: PASS"
			}
			t.Result = verdict(ratio >= 5) + ", " + stretch
		} else {
			t.Figure, t.Result, t.Missing = notMeasured, "–", true
		}
		ts = append(ts, t)
	}

	// 2. Per-poll cost at most linear in sockets.
	{
		t := target{Name: "per-poll cost grows at most linearly with sockets"}
		var parts []string
		ok, any := true, false
		for _, key := range []string{nw(1).Key, nw(0.1).Key} {
			var xs, ys []float64
			for _, n := range cfg.Sizes {
				f := a.cpu(a.sizeKey(n), key)
				if f.PerPoll.N > 0 && !f.Saturated {
					xs, ys = append(xs, f.Table.Med), append(ys, f.PerPoll.Med)
				}
			}
			if len(xs) >= 2 {
				any = true
				b := logSlope(xs, ys)
				parts = append(parts, fmt.Sprintf("%s: log-log slope %.2f over %s–%s sockets in the table",
					key, b, fmtCount(xs[0]), fmtCount(xs[len(xs)-1])))
				ok = ok && b <= 1.1
			}
		}
		if any {
			t.Figure = strings.Join(parts, "; ") + " (linear = 1.0; PASS if ≤ 1.1)"
			t.Result = verdict(ok)
		} else {
			t.Figure, t.Result, t.Missing = notMeasured+" (needs two sizes)", "–", true
		}
		ts = append(ts, t)
	}

	// 3. Not growing with the number of processes.
	{
		t := target{Name: "steady-state cost does not grow with the number of processes"}
		var parts []string
		ok, any := true, false
		for _, key := range []string{nw(1).Key, nw(0.1).Key} {
			base := a.cpu(a.sizeKey(cfg.ProcSize), key)
			if base.Rate.N == 0 {
				continue
			}
			fig := []string{fmt.Sprintf("%s ms/s with no extra processes", ms(base.Rate.Med))}
			for _, p := range cfg.ProcCounts {
				f := a.cpu(scKey{"procs", cfg.ProcSize, p}, key)
				if f.Rate.N == 0 {
					continue
				}
				any = true
				fig = append(fig, fmt.Sprintf("%s with %d", ms(f.Rate.Med), p))
				ok = ok && f.Rate.Med <= 1.25*base.Rate.Med+0.0005
			}
			parts = append(parts, key+": "+strings.Join(fig, ", "))
		}
		if any {
			t.Figure = strings.Join(parts, "; ") + fmt.Sprintf(" (%s sockets; PASS if ≤ 1.25 × the 0-process figure + 0.5 ms/s)", fmtSockets(cfg.ProcSize))
			t.Result = verdict(ok)
		} else {
			t.Figure, t.Result, t.Missing = notMeasured, "–", true
		}
		ts = append(ts, t)
	}

	// 4 and 5. Capture.
	{
		t4 := target{Name: "≥ 99 % of connections living ≥ 2 × period are reported once, with the right Pid and Name"}
		t5 := target{Name: "connections shorter than the period are still reported (Pid -1) where a TIME_WAIT remnant exists"}
		var p4, p5 []string
		ok4, ok5, any4, any5 := true, true, false, false
		reusedTotal := 0
		for _, m := range cfg.CaptureMethods {
			if m.Kind != Watch {
				continue
			}
			var long, short, all []ConnResult
			reused := 0
			for _, c := range a.conns(m.Key, -1) {
				life := float64(c.LifeMS) / 1e3
				if life >= 2*m.Period {
					long = append(long, c)
				} else if life < m.Period {
					// A remnant the kernel recycled for a later connection
					// is not a remnant the OS kept.
					all = append(all, c)
					if c.Reused {
						reused++
						continue
					}
					short = append(short, c)
				}
			}
			if reused > 0 {
				reusedTotal += reused
			}
			if s := summarizeConns(long); s.N > 0 {
				any4 = true
				p4 = append(p4, fmt.Sprintf("%s: %s of %d", m.Key, pct(s.OnceRight, s.N), s.N))
				ok4 = ok4 && float64(s.OnceRight) >= 0.99*float64(s.N)
			}
			if s := summarizeConns(short); s.N > 0 {
				any5 = true
				sa := summarizeConns(all)
				p5 = append(p5, fmt.Sprintf("%s: %s of %d reported (%s of them with Pid -1; %s of all %d)", m.Key,
					pct(s.Reported, s.N), s.N, pct(s.Orphan, s.Reported), pct(sa.Reported, sa.N), sa.N))
				ok5 = ok5 && float64(s.Reported) >= 0.99*float64(s.N)
			}
		}
		if any4 {
			t4.Figure, t4.Result = strings.Join(p4, "; "), verdict(ok4)
		} else {
			t4.Figure, t4.Result, t4.Missing = notMeasured, "–", true
		}
		if any5 {
			t5.Figure, t5.Result = strings.Join(p5, "; ")+fmt.Sprintf(" (PASS if ≥ 99 %% reported: every one leaves a TIME_WAIT remnant here; left out: %d whose local port the kernel gave to a later connection of the same run, which recycles the remnant)", reusedTotal), verdict(ok5)
		} else {
			t5.Figure, t5.Result, t5.Missing = notMeasured, "–", true
		}
		ts = append(ts, t4, t5)
	}

	// 6. Memory.
	{
		t := target{Name: fmt.Sprintf("max RSS at %s sockets with churn ≤ 150 MB for the whole query process", fmtSockets(65536))}
		s := a.memSpread(nw(0.1).Key)
		if s.N > 0 {
			t.Figure = fmt.Sprintf("netstat_watch 0.1 s: %.1f MB worst of %d run(s) (median %.1f) at %s held sockets + %d connections/s churn",
				s.Max, s.N, s.Med, fmtSockets(cfg.MemSize), cfg.ChurnRate)
			t.Result = verdict(s.Max <= 150)
			if cfg.MemSize != 65536 {
				t.Result += " (at " + fmtSockets(cfg.MemSize) + ", not 64k: indicative)"
			}
		} else {
			t.Figure, t.Result, t.Missing = notMeasured, "–", true
		}
		ts = append(ts, t)
	}
	return ts
}

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

func writeReport(res *Results, out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	a := newAnalysis(res)
	if err := a.plots(out); err != nil {
		return err
	}
	var b strings.Builder
	a.markdown(&b)
	if err := os.WriteFile(filepath.Join(out, "BENCHMARKS.md"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	// A target with no figure is a benchmark that measured nothing for it
	// (a scenario skipped, a method or period renamed in the config):
	// written, so that it can be read, but a failure.
	var missing []string
	for _, t := range a.targets() {
		if t.Missing {
			missing = append(missing, "\n  - "+t.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s written, but no figure for %d target(s):%s",
			filepath.Join(out, "BENCHMARKS.md"), len(missing), strings.Join(missing, ""))
	}
	return nil
}

func (a *analysis) markdown(b *strings.Builder) {
	res, cfg := a.res, a.cfg
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	kind := "full run (`make bench`)"
	if cfg.Quick {
		kind = "**quick run (`make bench-quick`): one repetition, short windows, fewer sizes; the figures are indicative only**"
	}

	p("# Benchmarks: netstat_watch() against stock diff(netstat())\n\n")
	p("Generated by `tools/bench` (%s) on %s in %s. Do not edit by hand: run `make bench` (40-60 min here, most of it waiting out other processes' sockets) to regenerate this file and the plots; `make bench-quick` (< 3 min) writes a cut-down version under `build/bench-quick/`.\n\n",
		kind, res.Env.Start.UTC().Format("2006-01-02 15:04 MST"), res.Elapsed().Round(time.Second))
	p("Every figure is the median of %d repetition(s) with the range (min–max) in brackets. CPU is CPU time of the monitoring process (user + sys), not wall time, measured in the steady state and net of an idle query; see [How it was measured](#how-it-was-measured).\n\n", cfg.Runs)

	// Targets.
	p("## Targets\n\n| target (issue 3) | figure | result |\n| --- | --- | --- |\n")
	for _, t := range a.targets() {
		p("| %s | %s | %s |\n", t.Name, t.Figure, t.Result)
	}
	p("\n")
	if len(res.Failures) > 0 {
		p("Measurements that failed in this run (left out of the figures):\n\n")
		for _, f := range res.Failures {
			p("- %s\n", f)
		}
		p("\n")
	}

	a.recommendation(b)

	// CPU vs sockets.
	p("## 1. CPU per second of monitoring, by number of open sockets\n\n")
	p("![CPU per second of monitoring against open sockets, log-log](%s)\n\n", cpuPlot)
	p("Milliseconds of CPU per second of monitoring (= thousandths of one core), net of the idle query. `ss` is the cost of the `ss` processes alone.\n\n")
	hdr := "| method |"
	sep := "| --- |"
	for _, n := range cfg.Sizes {
		hdr += fmt.Sprintf(" %s sockets |", fmtSockets(n))
		sep += " ---: |"
	}
	// methodRows writes a row per method, a cell per size.
	methodRows := func(value func(cpuFig) Spread) {
		for _, m := range cfg.CPUMethods {
			if m.Kind == Idle {
				continue
			}
			row := "| " + m.Label() + " |"
			for _, n := range cfg.Sizes {
				f := a.cpu(a.sizeKey(n), m.Key)
				row += " " + cell(value(f)) + marks(f) + " |"
			}
			p("%s\n", row)
		}
	}
	p("%s\n%s\n", hdr, sep)
	methodRows(func(f cpuFig) Spread { return f.Rate })
	p("\nThe same, per poll (ms of CPU for one snapshot: per tick for netstat_watch, per `diff()` evaluation for stock, per `ss` call):\n\n%s\n%s\n", hdr, sep)
	methodRows(func(f cpuFig) Spread { return f.PerPoll })
	p("\nContext of each column (medians):\n\n| | ")
	for _, n := range cfg.Sizes {
		p("%s | ", fmtSockets(n))
	}
	p("\n| --- |%s\n", strings.Repeat(" ---: |", len(cfg.Sizes)))
	rowOf := func(label string, f func(n int) string) {
		p("| %s |", label)
		for _, n := range cfg.Sizes {
			p(" %s |", f(n))
		}
		p("\n")
	}
	rowOf("sockets in the kernel tables (held + the machine's own)", func(n int) string {
		return fmtCount(a.cpu(a.sizeKey(n), nw(1).Key).Table.Med)
	})
	rowOf(fmt.Sprintf("idle query in this scenario, ms/s (the median over the whole run, %s ms/s, is subtracted)", ms(a.idle(scKey{}))),
		func(n int) string { return cell(a.idleIn(a.sizeKey(n))) })
	rowOf("stock 1 s: seconds between two diff() runs", func(n int) string {
		return fmt.Sprintf("%.2f", a.cpu(a.sizeKey(n), stock(1).Key).Interval.Med)
	})
	p("\n† crowded: in at least one repetition other processes on this shared machine held more than %s extra sockets (beyond 25 %% of the intended count) before or after the window, which every method then had to read too; the harness waits up to %v (%v over the whole run) for them to go away before each measurement, and measures again (twice at most) when they came during one; these are what was left. The raw results keep the table size of every repetition.\n", "1,000", cfg.Settle, cfg.SettleTotal)
	p("\n‡ saturated: the method could not keep its period (a poll took longer than the period, or `diff()` ran less often than every 1.5 × period), so it polled less often than asked. Its per-poll figure divides by the polls asked for, so for netstat_watch it understates the real cost of a poll (about 100 ms at 64k sockets).\n\n")

	// Processes.
	p("## 2. CPU with many processes\n\n")
	p("%s held sockets plus idle processes each holding %d non-socket fds (pipes and /dev/null). The stock method reads every fd of every process on every poll; netstat_watch reads `/proc` only to find the owner of a socket it has not seen before. ms of CPU per second, net of the idle query:\n\n", fmtSockets(cfg.ProcSize), cfg.ProcFds)
	p("| method | no extra processes |")
	for _, n := range cfg.ProcCounts {
		p(" %d processes |", n)
	}
	p("\n| --- | ---: |%s\n", strings.Repeat(" ---: |", len(cfg.ProcCounts)))
	for _, m := range cfg.ProcMethod {
		if m.Kind == Idle {
			continue
		}
		f := a.cpu(a.sizeKey(cfg.ProcSize), m.Key)
		p("| %s | %s |", m.Label(), cell(f.Rate)+marks(f))
		for _, n := range cfg.ProcCounts {
			f := a.cpu(scKey{"procs", cfg.ProcSize, n}, m.Key)
			p(" %s |", cell(f.Rate)+marks(f))
		}
		p("\n")
	}
	p("| processes on the machine | %s |", fmtCount(a.nprocMed(a.sizeKey(cfg.ProcSize))))
	for _, n := range cfg.ProcCounts {
		p(" %s |", fmtCount(a.nprocMed(scKey{"procs", cfg.ProcSize, n})))
	}
	p("\n\n")

	// Capture.
	a.captureSection(b)

	// Memory.
	p("## 4. Memory: max RSS at %s sockets with churn\n\n", fmtSockets(cfg.MemSize))
	p("The holder keeps %s sockets open while a churn process opens and closes %d loopback connections per second (each open 0–0.5 s, closed by the client so it leaves a TIME_WAIT remnant) for %s. Max RSS is the kernel's `ru_maxrss` of the whole `velociraptor query` process over its life (startup included).\n\n",
		fmtSockets(cfg.MemSize), cfg.ChurnRate, cfg.ChurnFor)
	p("| method | runs | max RSS, MB | CPU during churn, ms/s | sockets in the tables at the start | … at the end |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, m := range cfg.MemMethods {
		var rss, cpu, from, tab []float64
		for _, r := range res.Mem {
			if r.Method == m.Key && r.Err == "" {
				rss = append(rss, float64(r.MaxRSSKB)/1024)
				cpu = append(cpu, r.CPU/r.Window)
				from = append(from, float64(r.TableFrom))
				tab = append(tab, float64(r.Table))
			}
		}
		s := spread(rss)
		p("| %s | %d | %s | %s | %s | %s |\n", m.Label(), s.N, mbCell(s), cell(spread(cpu)), fmtCount(spread(from).Med), fmtCount(spread(tab).Med))
	}
	if s := a.idleRSS(); s.N > 0 {
		p("| idle query, for reference (`clock(period=1)`) | %d | %s | – | – | – |\n", s.N, mbCell(s))
	}
	p("\nA run that follows another starts with the remnants of the previous churn still in the tables (TIME_WAIT lasts 60 s).\n")
	p("\n")

	// ss.
	p("## 5. `ss -tunap` as an outside reference\n\n")
	p("`ss -tunap` is a full socket + owner snapshot (netlink dump, then a walk of every process's fds for the owners), the same work as one stock poll without Velociraptor. Run every 1 s and every 0.1 s in section 1: ")
	if f, g := a.cpu(a.sizeKey(4096), ssm(1).Key), a.cpu(a.sizeKey(4096), nw(1).Key); f.PerPoll.N > 0 && g.PerPoll.N > 0 {
		p("at 4k sockets one `ss` call costs %s ms of CPU, one netstat_watch tick %s ms.", ms(f.PerPoll.Med), ms(g.PerPoll.Med))
	}
	p("\n\n")

	a.method(b)

	if notes, err := os.ReadFile(notesFile); err == nil {
		p("%s\n", strings.TrimSpace(string(notes)))
	}
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

func (a *analysis) captureSection(b *strings.Builder) {
	cfg := a.cfg
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## 3. Capture rate: connections with a known lifetime, each from a short-lived process\n\n")
	p("![Share of connections reported, by lifetime](%s)\n\n", capturePlot)
	p("Each connection comes from its own process (`nwbench-conn`, launched %.0f per second, lifetimes in a shuffled order), which connects to a loopback listener, keeps the connection for the given lifetime, closes it first (its side keeps a TIME_WAIT remnant, as an outbound connection does) and exits at once. The harness knows each child's Pid, local port and name; an `added` row is matched to a child by local port (and time, as a port can come back). *Reported* = at least one `added` row; *right Pid + Name* = an `added` row with the child's Pid and `ProcInfo.Data.Name`; *once and right* = exactly one `added` row, and it is right; *duplicates* = extra `added` rows per reported connection; *Pid -1* = the first `added` row had no owner (the TIME_WAIT remnant of a connection that opened and closed between two polls); *port reused* = connections whose local port the kernel gave to a later connection of the same run while they were in TIME_WAIT (with `tcp_tw_reuse`=2, loopback TIME_WAIT sockets are recycled after 1 s), so their remnant may be gone before a poll: the rare unreported connections are these. %d connections per method and run, %d run(s), pooled.\n\n",
		cfg.CaptureRate, cfg.CaptureConns, cfg.Runs)
	p("| method | lifetime | n | reported | right Pid | right Pid + Name | once and right | duplicates per reported | first row Pid -1 | port reused |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, m := range cfg.CaptureMethods {
		for _, life := range cfg.Lifetimes {
			cs := a.conns(m.Key, int(life/time.Millisecond))
			s := summarizeConns(cs)
			if s.N == 0 {
				continue
			}
			dup := "–"
			if s.Reported > 0 {
				dup = fmt.Sprintf("%.2f", float64(s.Dups)/float64(s.Reported))
			}
			p("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %d |\n", m.Label(), fmtLife(life), s.N,
				pct(s.Reported, s.N), pct(s.RightPid, s.N), pct(s.RightName, s.N), pct(s.OnceRight, s.N), dup, pct(s.Orphan, s.Reported), s.Reused)
		}
	}
	p("\nCPU while capturing (%.0f short-lived processes and connections per second), ms/s, whole window, not net of idle:\n\n| method | CPU |\n| --- | ---: |\n", cfg.CaptureRate)
	for _, m := range cfg.CaptureMethods {
		var xs []float64
		for _, r := range a.res.Capture {
			if r.Method == m.Key && r.Err == "" && r.Window > 0 {
				xs = append(xs, r.CPU/r.Window)
			}
		}
		p("| %s | %s |\n", m.Label(), cell(spread(xs)))
	}
	p("\n")
}

func fmtLife(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d/time.Millisecond)
	}
	return fmt.Sprintf("%g s", d.Seconds())
}

// recommendation picks the client artifact's default period from the figures.
func (a *analysis) recommendation(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("## Recommended default period\n\n")
	rec, why := a.recommend()
	if rec == "" {
		p("Not enough figures in this run to recommend one (%s).\n\n", why)
		return
	}
	p("**%s**. %s\n\n", rec, why)
}

// recommend applies the rule stated in the report: the shortest measured
// period that (1) meets the capture target, (2) costs at most 1 % of a core
// at 1k sockets (a typical endpoint has fewer) and (3) at 4k sockets costs
// less than the stock artifact at its own default period (2 s).
func (a *analysis) recommend() (string, string) {
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
	var lines []string
	chosen := ""
	for _, m := range nws {
		c1, c4 := a.cpu(a.sizeKey(1024), m.Key).Rate, a.cpu(a.sizeKey(4096), m.Key).Rate
		if c1.N == 0 || c4.N == 0 || stock2.N == 0 {
			continue
		}
		var long []ConnResult
		for _, c := range a.conns(m.Key, -1) {
			if float64(c.LifeMS)/1e3 >= 2*m.Period {
				long = append(long, c)
			}
		}
		s := summarizeConns(long)
		capOK := s.N > 0 && float64(s.OnceRight) >= 0.99*float64(s.N)
		capTxt := "capture not measured"
		if s.N > 0 {
			capTxt = fmt.Sprintf("%s of connections ≥ %s once and right", pct(s.OnceRight, s.N), fmtLife(time.Duration(2*m.Period*float64(time.Second))))
		}
		ok := capOK && c1.Med <= 0.010 && c4.Med < stock2.Med
		lines = append(lines, fmt.Sprintf("- %s: %s ms/s at 1k sockets, %s ms/s at 4k; %s%s", m.Label(),
			ms(c1.Med), ms(c4.Med), capTxt, map[bool]string{true: " — meets all three", false: ""}[ok]))
		if ok && chosen == "" {
			chosen = m.Label()
		}
	}
	if len(lines) == 0 {
		return "", "CPU at 1k and 4k sockets and stock at 2 s are needed"
	}
	why := fmt.Sprintf("Rule: the shortest measured period that (1) meets the capture target (≥ 99 %% of connections living ≥ 2 × period reported once with the right Pid and Name), (2) costs at most 10 ms of CPU per second (1 %% of one core) at 1k sockets — more than most endpoints have — and (3) at 4k sockets costs less than the stock artifact at its own default period of 2 s (%s ms/s here), so that nobody pays more than before for sub-second polling.\n\n%s",
		ms(stock2.Med), strings.Join(lines, "\n"))
	if chosen == "" {
		return "none of the measured periods meets the rule", why
	}
	return "Period " + strings.TrimPrefix(chosen, "netstat_watch "), why
}

func (a *analysis) method(b *strings.Builder) {
	res, cfg := a.res, a.cfg
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	e := res.Env
	p("## How it was measured\n\n")
	p("- **Machine**: %d × %s, Linux %s, a shared VM (other engineers' tests were running: %d sockets and %d processes were already there at the start, load average %.2f at the start and %.2f at the end). Go %s. Binary: `%s` (%s), netwatch %s. `tcp_tw_reuse`=%s, ephemeral ports %s.\n",
		e.NCPU, e.CPUModel, e.Kernel, e.BaseTable, e.BaseProcs, e.Load1Start, e.Load1End, e.GoVersion, "build/velociraptor", e.Velociraptor, e.GitRev, e.TwReuse, e.EphemeralPorts)
	p("- **Methods**, each run alone through `build/velociraptor query -v --max_wait=1 --format jsonl`, so the whole Velociraptor overhead counts the same:\n")
	p("  - *stock*: the query of the original exchange artifact `Generic.Events.TrackNetworkConnections` (Velocidex/velociraptor-docs, `content/exchange/artifacts/Generic.Events.TrackNetworkConnections.yaml`), with its `Period` (default 2, minimum 1 as `diff()` takes whole seconds):\n\n    ```vql\n    %s\n    ```\n\n", strings.ReplaceAll(StockQuery(1), "\n", "\n    "))
	p("    Its `process_tracker_get()` is Velociraptor's default tracker in `query` (a `pslist()` cached for 10 s), so its `ProcInfo.Data.Name` is what the stock artifact reports.\n")
	p("  - *netstat_watch*: `SELECT * FROM netstat_watch(period=P)` (defaults: all kinds, listening sockets included, removed rows on).\n")
	p("  - *idle*: `%s`, the baseline subtracted from every query's CPU.\n", idleQuery)
	p("  - *ss*: `ss -tunap` started every P seconds by the harness, output to /dev/null; CPU of the `ss` processes (rusage).\n")
	p("- **CPU**: the query process's CPU time (user + sys of all its threads, `/proc/PID/task/*/schedstat`, nanoseconds) over a steady-state window of about %s of whole polls, after a warmup of at least %s (Velociraptor's own startup costs about 1.5 s of CPU and is excluded, as is netstat_watch's first snapshot, which looks up the owner of every socket). For netstat_watch the window starts and ends half a period after a tick; for stock it starts and ends as a `diff()` run starts (counted from its `diff: Running query` log line), so both hold whole polls. Minus the idle query's steady-state rate measured the same way in the same scenario. Per poll = CPU in the window / polls in the window, net of idle. Methods run one at a time, in a different order in each repetition.\n",
		cfg.Window, cfg.Warmup)
	p("- **Sockets**: a holder process (`nwbench-holder`) opens N/2 loopback TCP connections to one listener on 127.0.0.1, from source addresses 127.0.0.2, .3, … (8,000 each), and keeps both ends: N sockets owned by one process. RLIMIT_NOFILE is raised as needed. The kernel table also holds the machine's own sockets (see the context table): the per-poll slopes use the real table size. The holder closes with RST so no TIME_WAIT is left for the next size.\n")
	p("- **Processes**: the holder also starts idle processes (`nwbench-idle`), each holding %d non-socket fds (a pipe and /dev/null) and no socket.\n", cfg.ProcFds)
	p("- **Capture**: see section 3. The harness's listener is the server side; only the children's (client) sockets are scored.\n")
	p("- **Memory**: `ru_maxrss` of the query process; churn by `nwbench-churn` (%d connections/s from 127.0.0.10-13, bounded count and time).\n", cfg.ChurnRate)
	p("- **Repetitions**: %d; figures are medians with min–max. Raw results: `%s` (not committed); rerun the report from them with `go run ./tools/bench -report FILE -out docs`.\n",
		cfg.Runs, "build/bench/results.json")
	crowded := 0
	for _, r := range res.Capture {
		if max(r.TableFrom, r.TableTo) > crowdLimit(0, e.BaseTable) {
			crowded++
		}
	}
	p("- **Other processes**: this is a shared machine; other engineers' tests come and go, some with thousands of sockets for minutes. Before each measurement the harness waits (at most %v, %v in all) until the kernel tables hold about what the scenario intends, and repeats a measurement (twice at most) if the tables were crowded before or after it. Capture runs left crowded: %d of %d.\n",
		cfg.Settle, cfg.SettleTotal, crowded, len(res.Capture))
	p("- All traffic is on 127.0.0.0/8. Every helper is bounded in count and time and exits when the harness goes away.\n\n")
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
		s := Series{Name: m.Label(), Color: methodColor(m, i), Dashed: m.Kind != Watch && m.Kind != Kernel, Marker: i}
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
			s := Series{Name: m.Label(), Color: methodColor(m, i), Marker: i, Dashed: m.Kind != Watch && m.Kind != Kernel}
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
	return savePNG(filepath.Join(out, capturePlot), 1000, 520,
		mk("Reported as added at all (any Pid)", func(s connSummary) int { return s.Reported }),
		mk("Reported once, with the right Pid and process Name", func(s connSummary) int { return s.OnceRight }))
}

// methodColors: each method's colour in every plot, by kind and period
// (reds for stock, blues to greens for netstat_watch, shorter periods
// lighter, greys for ss). A method not listed takes a palette colour.
var methodColors = map[Kind]map[float64]color.RGBA{
	Stock: {2: {140, 20, 20, 255}, 1: {230, 40, 40, 255}},
	Watch: {1: {20, 60, 160, 255}, 0.5: {40, 130, 220, 255}, 0.25: {20, 170, 190, 255},
		0.1: {30, 150, 50, 255}, 0.05: {140, 190, 30, 255}},
	SS: {1: {90, 90, 90, 255}, 0.1: {160, 160, 160, 255}},
}

func methodColor(m Method, i int) color.RGBA {
	if c, ok := methodColors[m.Kind][m.Period]; ok {
		return c
	}
	return palette[i%len(palette)]
}
