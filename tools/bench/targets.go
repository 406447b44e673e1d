//go:build linux

package main

import (
	"fmt"
	"strings"
)

// The targets of issues 3 and 12 as data: what each needs measured and how
// its figure and verdict come from the results. The report iterates them;
// one left without a figure fails the report (writeReport).

// need is a method a target reads the figures of, in one scenario.
type need struct {
	Scenario Scenario
	Method   Method
}

// outcome is a target's figure and verdict; no Figure: not measured.
type outcome struct {
	Figure string
	Pass   bool
	Note   string // after the verdict: ", stretch 1/20: MISS"
}

type targetDef struct {
	Issue int
	Name  string
	Needs []need
	Eval  func(*analysis) outcome
}

// target is one line of the targets table.
type target struct {
	Issue                int
	Name, Figure, Result string
	Missing              bool // no figure in this run: the report fails
}

func needs(s Scenario, ms ...Method) []need {
	out := make([]need, len(ms))
	for i, m := range ms {
		out[i] = need{s, m}
	}
	return out
}

// kpaceLabel names the kernel-pace figure as configured.
const kpaceLabel = "1 ms connections at 1,000/s, each from its own process"

var targetDefs = []targetDef{
	{Issue: 3, Name: "netstat_watch at 0.1 s costs ≤ 1/5 of stock at 1 s with 4k sockets (stretch 1/20)",
		Needs: needs(ScCPU, nw(0.1), stock(1)), Eval: (*analysis).cpuRatioTarget},
	{Issue: 3, Name: "per-poll cost grows at most linearly with sockets",
		Needs: needs(ScCPU, nw(1), nw(0.1)), Eval: (*analysis).linearTarget},
	{Issue: 3, Name: "steady-state cost does not grow with the number of processes",
		Needs: append(needs(ScCPU, nw(0.1)), needs(ScProcs, nw(0.1))...), Eval: (*analysis).procsTarget},
	{Issue: 3, Name: "≥ 99 % of connections living ≥ 2 × period are reported once, with the right Pid and Name",
		Needs: needs(ScCapture, nw(0.1)), Eval: (*analysis).longCaptureTarget},
	{Issue: 3, Name: "connections shorter than the period are still reported (Pid -1) where a TIME_WAIT remnant exists",
		Needs: needs(ScCapture, nw(0.1)), Eval: (*analysis).shortCaptureTarget},
	{Issue: 3, Name: "max RSS at 64k sockets with churn ≤ 150 MB for the whole query process (netstat_watch 0.1 s)",
		Needs: needs(ScMemory, nw(0.1)), Eval: func(a *analysis) outcome { return a.memTarget(nw(0.1)) }},
	{Issue: 12, Name: "kernel events: ≥ 99.9 % of " + kpaceLabel + ", reported once with the right Pid and Name, outbound, inbound and in a second network namespace",
		Needs: needs(ScKpace, ebpfMethod), Eval: (*analysis).kpaceCaptureTarget},
	{Issue: 12, Name: "kernel events: CPU ≤ 20 ms/s at 1,000 connections/s",
		Needs: needs(ScKpace, ebpfMethod), Eval: (*analysis).kpaceCPUTarget},
	{Issue: 12, Name: "kernel events: near-zero CPU (≤ 10 ms/s) with 4k, 16k and 64k idle sockets, ≥ 20 × cheaper than stock at 1 s with 4k",
		Needs: needs(ScCPU, ebpfMethod, stock(1)), Eval: (*analysis).idleSweepTarget},
	{Issue: 12, Name: "kernel events: max RSS at 64k sockets with churn ≤ 150 MB",
		Needs: needs(ScMemory, ebpfMethod), Eval: func(a *analysis) outcome { return a.memTarget(ebpfMethod) }},
}

func (a *analysis) targets() []target {
	ts := make([]target, 0, len(targetDefs))
	for _, d := range targetDefs {
		o := d.Eval(a)
		t := target{Issue: d.Issue, Name: d.Name, Figure: o.Figure, Result: verdict(o.Pass) + o.Note}
		if o.Figure == "" {
			var ns []string
			for _, n := range d.Needs {
				ns = append(ns, fmt.Sprintf("%s in %s", n.Method.Key, n.Scenario))
			}
			t.Figure, t.Result, t.Missing = "not measured in this run (needs "+strings.Join(ns, ", ")+")", "–", true
		}
		ts = append(ts, t)
	}
	return ts
}

func (a *analysis) cpuRatioTarget() outcome {
	nwF, stF := a.cpu(a.sizeKey(4096), nw(0.1).Key), a.cpu(a.sizeKey(4096), stock(1).Key)
	if nwF.Rate.N == 0 || stF.Rate.N == 0 {
		return outcome{}
	}
	ratio := stF.Rate.Med / nwF.Rate.Med
	return outcome{
		Figure: fmt.Sprintf("%s ms/s vs %s ms/s of CPU (medians): 1/%.1f", ms(nwF.Rate.Med), ms(stF.Rate.Med), ratio),
		Pass:   ratio >= 5,
		Note:   ", stretch 1/20: " + map[bool]string{true: "PASS", false: "MISS"}[ratio >= 20],
	}
}

func (a *analysis) linearTarget() outcome {
	var parts []string
	ok := true
	for _, m := range []Method{nw(1), nw(0.1)} {
		var xs, ys []float64
		for _, n := range a.cfg.Sizes {
			f := a.cpu(a.sizeKey(n), m.Key)
			if f.PerPoll.N > 0 && !f.Saturated {
				xs, ys = append(xs, f.Table.Med), append(ys, f.PerPoll.Med)
			}
		}
		if len(xs) >= 2 {
			b := logSlope(xs, ys)
			parts = append(parts, fmt.Sprintf("%s: log-log slope %.2f over %s–%s sockets in the table",
				m.Key, b, fmtCount(xs[0]), fmtCount(xs[len(xs)-1])))
			ok = ok && b <= 1.1
		}
	}
	if len(parts) == 0 {
		return outcome{}
	}
	return outcome{Figure: strings.Join(parts, "; ") + " (linear = 1.0; PASS if ≤ 1.1)", Pass: ok}
}

func (a *analysis) procsTarget() outcome {
	cfg := a.cfg
	var parts []string
	ok, any := true, false
	for _, m := range []Method{nw(1), nw(0.1)} {
		base := a.cpu(a.sizeKey(cfg.ProcSize), m.Key)
		if base.Rate.N == 0 {
			continue
		}
		fig := []string{fmt.Sprintf("%s ms/s with no extra processes", ms(base.Rate.Med))}
		for _, p := range cfg.ProcCounts {
			f := a.cpu(scKey{"procs", cfg.ProcSize, p}, m.Key)
			if f.Rate.N == 0 {
				continue
			}
			any = true
			fig = append(fig, fmt.Sprintf("%s with %d", ms(f.Rate.Med), p))
			ok = ok && f.Rate.Med <= 1.25*base.Rate.Med+0.0005
		}
		parts = append(parts, m.Key+": "+strings.Join(fig, ", "))
	}
	if !any {
		return outcome{}
	}
	return outcome{Figure: strings.Join(parts, "; ") + fmt.Sprintf(" (%s sockets; PASS if ≤ 1.25 × the 0-process figure + 0.5 ms/s)", fmtSockets(cfg.ProcSize)), Pass: ok}
}

// byLifetime splits a polling method's captured connections: those living
// at least two periods, and those shorter than one (all, and those whose
// remnant the kernel did not recycle).
func (a *analysis) byLifetime(m Method) (long, short, all []ConnResult) {
	for _, c := range a.conns(m.Key, -1) {
		life := float64(c.LifeMS) / 1e3
		if life >= 2*m.Period {
			long = append(long, c)
		} else if life < m.Period {
			all = append(all, c)
			if !c.Reused {
				short = append(short, c)
			}
		}
	}
	return
}

func (a *analysis) pollingCapture() []Method {
	var out []Method
	for _, m := range a.cfg.CaptureMethods {
		if m.Kind == Watch {
			out = append(out, m)
		}
	}
	return out
}

func (a *analysis) longCaptureTarget() outcome {
	var parts []string
	ok := true
	for _, m := range a.pollingCapture() {
		long, _, _ := a.byLifetime(m)
		if s := summarizeConns(long); s.N > 0 {
			parts = append(parts, fmt.Sprintf("%s: %s of %d", m.Key, pct(s.OnceRight, s.N), s.N))
			ok = ok && float64(s.OnceRight) >= 0.99*float64(s.N)
		}
	}
	if len(parts) == 0 {
		return outcome{}
	}
	return outcome{Figure: strings.Join(parts, "; "), Pass: ok}
}

func (a *analysis) shortCaptureTarget() outcome {
	var parts []string
	ok, reused := true, 0
	for _, m := range a.pollingCapture() {
		_, short, all := a.byLifetime(m)
		reused += len(all) - len(short)
		if s := summarizeConns(short); s.N > 0 {
			sa := summarizeConns(all)
			parts = append(parts, fmt.Sprintf("%s: %s of %d reported (%s of them with Pid -1; %s of all %d)", m.Key,
				pct(s.Reported, s.N), s.N, pct(s.Orphan, s.Reported), pct(sa.Reported, sa.N), sa.N))
			ok = ok && float64(s.Reported) >= 0.99*float64(s.N)
		}
	}
	if len(parts) == 0 {
		return outcome{}
	}
	return outcome{Figure: strings.Join(parts, "; ") + fmt.Sprintf(" (PASS if ≥ 99 %% reported: every one leaves a TIME_WAIT remnant here; left out: %d whose local port the kernel gave to a later connection of the same run, which recycles the remnant)", reused),
		Pass: ok}
}

func (a *analysis) memTarget(m Method) outcome {
	s := a.memSpread(m.Key)
	if s.N == 0 {
		return outcome{}
	}
	o := outcome{
		Figure: fmt.Sprintf("%s: %.1f MB worst of %d run(s) (median %.1f) at %s held sockets + %d connections/s churn",
			m.Label(), s.Max, s.N, s.Med, fmtSockets(a.cfg.MemSize), a.cfg.ChurnRate),
		Pass: s.Max <= 150,
	}
	if a.cfg.MemSize != 65536 {
		o.Note = " (at " + fmtSockets(a.cfg.MemSize) + ", not 64k: indicative)"
	}
	return o
}

// kpaceCaptureTarget: every group (direction × namespace) at ≥ 99.9 %.
func (a *analysis) kpaceCaptureTarget() outcome {
	groups := a.kpaceGroups(ebpfMethod)
	if len(groups) == 0 {
		return outcome{}
	}
	var parts []string
	ok := len(groups) == len(kpaceGroupOrder)
	for _, g := range groups {
		parts = append(parts, fmt.Sprintf("%s: %s of %d", g.Label, pct(g.S.OnceRight, g.S.N), g.S.N))
		ok = ok && float64(g.S.OnceRight) >= 0.999*float64(g.S.N)
	}
	o := outcome{Figure: strings.Join(parts, "; "), Pass: ok}
	if l := a.kpaceLaunch(ebpfMethod); l.Rate.N > 0 && l.Rate.Med < 0.95*a.cfg.KpaceRate {
		o.Note = fmt.Sprintf(" (launched at %s, not the %s asked: the launcher's limit on this machine, see section 6)", fmtRate(l.Rate.Med), fmtRate(a.cfg.KpaceRate))
	}
	return o
}

// kpaceCPUTarget: where the launcher reached about 1,000/s, the query's
// CPU per second; where it did not, the CPU per connection × 1,000 (its
// fixed costs, UDP polling and the reconciling snapshot, counted per
// connection too: an upper bound).
func (a *analysis) kpaceCPUTarget() outcome {
	l := a.kpaceLaunch(ebpfMethod)
	if l.CPU.N == 0 || l.PerConn.N == 0 {
		return outcome{}
	}
	fig := fmt.Sprintf("%s ms/s at %.0f connections/s (median of %d, %s)", ms(l.CPU.Med), l.Rate.Med, l.CPU.N, a.idleNote())
	// Beside it, what watching alone costs: the same connections dropped
	// in the plugin, as the client artifact drops loopback (not judged:
	// the target is about the rows a responder gets).
	excl := ""
	if x := a.kpaceLaunch(ebpfExclMethod); x.CPU.N > 0 && x.PerConn.N > 0 {
		excl = fmt.Sprintf(" [with the rows dropped in the plugin (exclude_loopback): %s ms/s at %.0f/s, %s ms per connection]",
			ms(x.CPU.Med), x.Rate.Med, ms(x.PerConn.Med))
	}
	if l.Rate.Med >= 0.95*1000 {
		return outcome{Figure: fig + excl, Pass: l.CPU.Med <= 0.020}
	}
	scaled := l.PerConn.Med * 1000
	return outcome{
		Figure: fig + fmt.Sprintf("; %s ms of CPU per connection, so %s ms/s at 1,000/s (an upper bound: fixed costs counted per connection too)",
			ms(l.PerConn.Med), ms(scaled)) + excl,
		Pass: scaled <= 0.020,
	}
}

// idleSweepTarget reads every size of 4k, 16k and 64k the run was
// configured for (the full one has all three: TestConfigsCoverTargets); a
// configured size without a figure leaves the target without one.
func (a *analysis) idleSweepTarget() outcome {
	var parts, left []string
	ok := true
	for _, n := range []int{4096, 16384, 65536} {
		if !containsInt(a.cfg.Sizes, n) {
			left = append(left, fmtSockets(n))
			continue
		}
		f := a.cpu(a.sizeKey(n), ebpfMethod.Key)
		if f.Rate.N == 0 {
			return outcome{}
		}
		parts = append(parts, fmt.Sprintf("%s ms/s at %s", ms(f.Rate.Med), fmtSockets(n)))
		ok = ok && f.Rate.Med <= 0.010
	}
	st := a.cpu(a.sizeKey(4096), stock(1).Key)
	ke := a.cpu(a.sizeKey(4096), ebpfMethod.Key)
	if st.Rate.N == 0 || ke.Rate.N == 0 {
		return outcome{}
	}
	// Net of the idle query, kernel events are within its noise (even
	// below zero): the ratio is taken on the whole query processes, idle
	// part included, which can only understate it.
	idle := a.idle(a.sizeKey(4096))
	ratio := (st.Rate.Med + idle) / (ke.Rate.Med + idle)
	o := outcome{Figure: fmt.Sprintf("kernel events %s (net of the idle query); at 4k, whole query processes (idle query's %s ms/s included): stock 1 s %s ms/s, kernel events %s ms/s, %.0f × the cost",
		strings.Join(parts, ", "), ms(idle), ms(st.Rate.Med+idle), ms(ke.Rate.Med+idle), ratio), Pass: ok && ratio >= 20}
	if len(left) > 0 {
		o.Note = " (" + strings.Join(left, " and ") + " not in this run's sizes: indicative)"
	}
	return o
}

// fmtRate writes connections per second: 1,000/s.
func fmtRate(r float64) string {
	n := fmt.Sprintf("%.0f", r)
	if len(n) > 3 {
		n = n[:len(n)-3] + "," + n[len(n)-3:]
	}
	return n + "/s"
}
