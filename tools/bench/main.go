//go:build linux

// Command bench measures netstat_watch() against the stock diff(netstat())
// artifact query and `ss -tunap`, side by side on this machine, and writes
// docs/BENCHMARKS.md plus PNG plots (issue 3).
//
//	go run ./tools/bench -binary build/velociraptor -out docs          # full, at most 50 min
//	go run ./tools/bench -binary build/velociraptor -quick -out DIR    # a few minutes
//	go run ./tools/bench -report build/bench/results.json -out docs    # rewrite the report only
//
// Every method runs through `velociraptor query`, one at a time, so the whole
// Velociraptor overhead counts the same. CPU is the query process's own CPU
// time (user+sys, from /proc/PID/task/*/schedstat, nanosecond resolution)
// over a steady-state window aligned to whole polls, minus the steady-state
// CPU of an idle query (`clock(period=1)`) measured in the same run: the
// machine is a shared 2-core VM, so wall time means nothing.
//
// The same binary is also every helper process, re-executed through a
// symlink whose name becomes the process name (comm):
//
//	nwbench-holder  holds N loopback sockets (N/2 connections) and P idle processes
//	nwbench-idle    one idle process holding a few non-socket fds
//	nwbench-churn   opens and closes loopback connections at a bounded rate
//	nwbench-conn    one short-lived process with one loopback connection
//
// The kernel-pace scenario's children (nwbench-kpace, hundreds a second)
// are a small C program, tools/bench/cchild/kpace.c, which the harness
// compiles as it starts: the bench binary costs too much to start.
//
// All traffic stays on 127.0.0.0/8 or inside a network namespace the
// harness creates and deletes; every helper stops by itself (bounded count
// and lifetime, and its stdin closing when the harness goes away).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if runHelper(os.Args[1:]) {
		return
	}

	var (
		binary  = flag.String("binary", "build/velociraptor", "the custom Velociraptor binary")
		out     = flag.String("out", "docs", "directory for BENCHMARKS.md and the plots")
		raw     = flag.String("raw", "", "where to write the raw results (default OUT/bench-results.json, or build/bench/results.json when OUT is docs)")
		quick   = flag.Bool("quick", false, "cut-down run (a few minutes)")
		runs    = flag.Int("runs", 0, "repetitions of every measurement (default 3, quick 1)")
		only    = flag.String("only", "", "comma-separated subset of scenarios: procs,capture,cpu,memory,kpace (default all; the report then fails for the targets left without a figure)")
		sizes   = flag.String("sizes", "", "comma-separated socket counts for the CPU figure (default 1024,4096,16384,65536; quick 1024,4096)")
		report  = flag.String("report", "", "only rewrite the report and plots from this raw results file")
		verbose = flag.Bool("v", false, "log every measurement")
	)
	flag.Parse()

	if *report != "" {
		res, err := loadResults(*report)
		if err == nil {
			err = writeReport(res, *out)
		}
		if err != nil {
			fatalf("%v", err)
		}
		fmt.Printf("wrote %s\n", filepath.Join(*out, "BENCHMARKS.md"))
		return
	}

	cfg := fullConfig()
	if *quick {
		cfg = quickConfig()
	}
	if *runs > 0 {
		cfg.Runs = *runs
	}
	if *only != "" {
		cfg.Only = map[string]bool{}
		for _, s := range strings.Split(*only, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(scenarios, Scenario(s)) {
				fatalf("-only: no scenario %q (%v)", s, scenarios)
			}
			cfg.Only[s] = true
		}
	}
	if *sizes != "" {
		cfg.Sizes = nil
		for _, f := range strings.Split(*sizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 || n > 1<<20 {
				fatalf("-sizes: bad size %q", f)
			}
			cfg.Sizes = append(cfg.Sizes, n)
		}
	}
	cfg.Binary = *binary
	cfg.Verbose = *verbose
	rawPath := *raw
	if rawPath == "" {
		rawPath = filepath.Join(*out, "bench-results.json")
		if filepath.Clean(*out) == "docs" {
			rawPath = filepath.Join("build", "bench", "results.json")
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "bench: interrupted, stopping helpers")
		cancel()
	}()

	h, err := newHarness(ctx, cfg)
	if err != nil {
		fatalf("%v", err)
	}
	res, err := h.run()
	h.close()
	if err != nil {
		fatalf("%v", err)
	}
	if err := saveResults(res, rawPath); err != nil {
		fatalf("%v", err)
	}
	if err := writeReport(res, *out); err != nil {
		fatalf("%v", err)
	}
	fmt.Printf("bench: wrote %s, plots and %s in %s\n",
		filepath.Join(*out, "BENCHMARKS.md"), rawPath, res.Elapsed().Round(time.Second))
}

// runHelper runs a helper subcommand (re-executed binary) and reports
// whether args named one.
func runHelper(args []string) bool {
	if len(args) == 0 {
		return false
	}
	var err error
	switch args[0] {
	case "holder":
		err = holderMain(args[1:])
	case "idle":
		err = idleMain(args[1:])
	case "churn":
		err = churnMain(args[1:])
	case "conn":
		err = connMain(args[1:])
	default:
		return false
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "nwbench %s: %v\n", args[0], err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func saveResults(res *Results, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func loadResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	res := &Results{}
	return res, json.Unmarshal(b, res)
}

// fmtSockets writes 1024 as 1k, 65536 as 64k.
func fmtSockets(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return strconv.Itoa(n/1024) + "k"
	}
	return strconv.Itoa(n)
}
