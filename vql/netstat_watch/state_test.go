package netstat_watch

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Velocidex/ordereddict"
	vql_subsystem "www.velocidex.com/golang/velociraptor/vql"

	"github.com/netwatch-dfir/netwatch/vql/tracker"
	"github.com/netwatch-dfir/netwatch/vql/watchstate"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
)

// loopbackServer accepts on 127.0.0.1 and holds each connection until the
// peer closes it.
func loopbackServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	testutil.Serve(ln)
	return ln
}

// holdingChild is a real process holding one loopback connection until it
// is killed.
func holdingChild(t *testing.T, addr string) (*exec.Cmd, uint32) {
	t.Helper()
	cmd, port := startChild(t, "tcp", addr, time.Minute)
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, uint32(port)
}

func kill(cmd *exec.Cmd) {
	cmd.Process.Kill()
	cmd.Wait()
}

// runWatch runs the plugin until the rows about the given client ports
// satisfy done (or timeout), then cancels it and waits for it to end (the
// final state is written by then). It returns the rows about those ports.
func runWatch(t *testing.T, plugin NetstatWatchPlugin, query string, ports map[uint32]bool,
	done func([]*ordereddict.Dict) bool, timeout time.Duration) ([]*ordereddict.Dict, *testutil.QueryLog) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rows, logs, ended := watchWith(t, ctx, plugin, query)
	var got []*ordereddict.Dict
	for row := range rows {
		if p, ok := get(row, "Laddr.Port").(uint32); ok && ports[p] {
			got = append(got, row)
			if done(got) {
				break
			}
		}
	}
	cancel()
	for range rows {
	}
	waitPluginEnd(t, ended)
	return got, logs
}

// waitBaseline waits until the watcher has saved a state at or after since:
// its first snapshot (the baseline, saved at once) is taken, so what
// changes from now on is seen while watching. A fixed sleep is not enough on
// a loaded machine or under the race detector.
func waitBaseline(t *testing.T, path string, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := watchstate.Load(path)
		if err == nil && !f.SavedAt.Before(since) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no state saved since %v 10 s after the watcher started: %v", since, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func rowsFor(rows []*ordereddict.Dict, port uint32) []string {
	var out []string
	for _, r := range rows {
		if get(r, "Laddr.Port") == port {
			out = append(out, get(r, "Diff").(string)+" offline="+strconv.FormatBool(get(r, "Offline") == true))
		}
	}
	return out
}

func savedPorts(t *testing.T, path string) map[uint32]tracker.Saved {
	t.Helper()
	f, err := watchstate.Load(path)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	out := map[uint32]tracker.Saved{}
	for _, c := range f.Conns {
		if !c.Closed {
			out[uint32(c.Socket.Local.Port())] = c
		}
	}
	return out
}

// The client restarts mid-stream, nothing lost: X open across the restart is
// not reported again, Y opened while the watcher was down is added, Z
// reported in run 1 and closed while it was down is removed; both Offline.
func TestStateAcrossRestart(t *testing.T) {
	ln := loopbackServer(t)
	state, query := stateQuery(t)

	// Run 1: X and Z open and are reported.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rows, logs, ended := watchWith(t, ctx, trustAtOnce, query)
	waitBaseline(t, state, time.Time{}) // no state file yet
	xCmd, x := holdingChild(t, ln.Addr().String())
	zCmd, z := holdingChild(t, ln.Addr().String())
	run1 := map[uint32]*ordereddict.Dict{}
	for row := range rows {
		if p, _ := get(row, "Laddr.Port").(uint32); (p == x || p == z) && get(row, "Diff") == "added" {
			run1[p] = row
			if len(run1) == 2 {
				break
			}
		}
	}
	cancel()
	for range rows {
	}
	waitPluginEnd(t, ended)
	if len(run1) != 2 {
		t.Fatalf("run 1: added rows for %v, want X %d and Z %d\nlogs: %s", run1, x, z, logs)
	}
	if !strings.Contains(logs.String(), "state "+state+": none yet") {
		t.Errorf("run 1 start line: %s", logs)
	}
	st, err := os.Stat(state)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file after run 1: %v, %v", st, err)
	}
	if saved := savedPorts(t, state); saved[x].ID == 0 || saved[z].ID == 0 {
		t.Fatalf("state after run 1 lacks X or Z: %v", saved)
	}

	// Down time: Z closes, Y opens.
	kill(zCmd)
	yCmd, y := holdingChild(t, ln.Addr().String())
	time.Sleep(100 * time.Millisecond)

	// Run 2.
	got, logs := runWatch(t, trustAtOnce, query, map[uint32]bool{x: true, y: true, z: true},
		func(r []*ordereddict.Dict) bool { return len(rowsFor(r, y)) > 0 && len(rowsFor(r, z)) > 0 },
		10*time.Second)
	if r := rowsFor(got, x); r != nil {
		t.Errorf("X, open across the restart, reported again: %v", r)
	}
	if r := rowsFor(got, y); len(r) != 1 || r[0] != "added offline=true" {
		t.Errorf("Y, opened while down: %v, want one added offline", r)
	}
	if r := rowsFor(got, z); len(r) != 1 || r[0] != "removed offline=true" {
		t.Errorf("Z, closed while down: %v, want one removed offline", r)
	}
	for _, r := range got {
		switch get(r, "Laddr.Port") {
		case y:
			if get(r, "Pid") != int32(yCmd.Process.Pid) || get(r, "ProcInfo.Data.Name") != filepath.Base(os.Args[0]) {
				t.Errorf("Y row: %v", r)
			}
		case z:
			want := run1[z]
			for _, col := range []string{"ConnId", "Pid", "FirstSeen", "ProcInfo.Data.Name", "ProcInfo.Data.CommandLine", "Direction"} {
				if g, w := get(r, col), get(want, col); g == nil || !equalCol(g, w) {
					t.Errorf("Z removed row %s = %v, run 1 said %v", col, g, w)
				}
			}
			if d, _ := get(r, "Duration").(float64); d < 0.1 {
				t.Errorf("Z Duration %v", get(r, "Duration"))
			}
		}
	}
	if !strings.Contains(logs.String(), "resuming from") || logLines(logs) != 1 {
		t.Errorf("run 2 logs:\n%s", logs)
	}

	// Run 3: X ends while watched: removed, not offline, with run 1's
	// ConnId and FirstSeen.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	started := time.Now()
	rows, logs, ended = watchWith(t, ctx, trustAtOnce, query)
	waitBaseline(t, state, started)
	kill(xCmd)
	var xr *ordereddict.Dict
	for row := range rows {
		if get(row, "Laddr.Port") == x {
			xr = row
			break
		}
	}
	cancel()
	for range rows {
	}
	waitPluginEnd(t, ended)
	if xr == nil || get(xr, "Diff") != "removed" || get(xr, "Offline") != false ||
		get(xr, "ConnId") != get(run1[x], "ConnId") || !equalCol(get(xr, "FirstSeen"), get(run1[x], "FirstSeen")) {
		t.Errorf("X end: %v\nrun 1 added: %v\nlogs: %s", xr, run1[x], logs)
	}
}

func equalCol(a, b any) bool {
	if ta, ok := a.(time.Time); ok {
		tb, ok := b.(time.Time)
		return ok && ta.Equal(tb)
	}
	return a == b
}

// While the plugin runs, the state is written when it changes (here every
// 100 ms), not only at the end.
func TestStateWrittenPeriodically(t *testing.T) {
	// However big this host's table makes the state; rows trusted at once.
	every100ms := NetstatWatchPlugin{stateTiming: &stateTiming{
		interval: 100 * time.Millisecond, bytesPerSecond: 1 << 40}}
	ln := loopbackServer(t)
	state := filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, logs, ended := watchWith(t, ctx, every100ms, "SELECT * FROM netstat_watch(period=0.05, kinds='tcp', state='"+state+"')")
	go func() {
		for range rows {
		}
	}()
	defer waitPluginEnd(t, ended)
	defer cancel()
	// Loading kernel events (backend auto) takes a few hundred ms.
	waitBaseline(t, state, time.Time{})
	_, port := holdingChild(t, ln.Addr().String())
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if f, err := watchstate.Load(state); err == nil {
			for _, c := range f.Conns {
				if uint32(c.Socket.Local.Port()) == port && !c.Closed {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("the new connection never reached the state file while running\n%s", logs)
}

// A damaged state file: one log line, then a normal baseline (the sockets
// already there are not reported), and a good state at the end.
func TestStateCorrupt(t *testing.T) {
	ln := loopbackServer(t)
	_, port := holdingChild(t, ln.Addr().String())
	time.Sleep(50 * time.Millisecond)
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":   "\x00\x01not a state\n",
		"foreign":   "Client:\n  writeback_linux: /etc/velociraptor.writeback.yaml\n",
		"truncated": "netwatch-netstat_watch-state 1 500 00000000\n{\"saved\":",
		"empty":     "",
	} {
		t.Run(name, func(t *testing.T) {
			state := filepath.Join(dir, name)
			if err := os.WriteFile(state, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, logs := runWatch(t, NetstatWatchPlugin{}, "SELECT * FROM netstat_watch(period=0.05, kinds='tcp', state='"+state+"')",
				map[uint32]bool{port: true}, func([]*ordereddict.Dict) bool { return false }, 500*time.Millisecond)
			if len(got) != 0 {
				t.Errorf("baseline socket reported: %v", got)
			}
			if n := strings.Count(logs.String(), "unusable"); n != 1 {
				t.Errorf("want one line about the state file, got %d:\n%s", n, logs)
			}
			if saved := savedPorts(t, state); saved[port].ID == 0 {
				t.Errorf("state not rewritten with the baseline: %v", saved)
			}
		})
	}
}

// A row emit refuses (the query's output closed at it) is saved as if it
// had not happened, however much the state trusts rows it delivered (here
// at once): the next run reports it, Offline. The watcher runs with an emit
// of the test's that refuses the row about X; the rest is the real thing.
func TestStateUndeliveredRowRepeated(t *testing.T) {
	for _, diff := range []string{"added", "removed"} {
		t.Run(diff, func(t *testing.T) {
			ln := loopbackServer(t)
			state, query := stateQuery(t)
			var xCmd *exec.Cmd
			var x uint32
			if diff == "removed" {
				// X is in run 1's baseline.
				xCmd, x = holdingChild(t, ln.Addr().String())
			}

			opts, err := parseOptions(&NetstatWatchArgs{Period: 0.05, Kinds: []string{"tcp"}, State: state},
				ordereddict.NewDict().Set("period", 0.05))
			if err != nil {
				t.Fatal(err)
			}
			opts.stateTiming = *trustAtOnce.stateTiming
			w, err := newWatcher(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			logs := &testutil.QueryLog{}
			scope := vql_subsystem.MakeScope()
			defer scope.Close()
			scope.SetLogger(logs.Logger())
			w.loadState(scope, time.Now())

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// The first row about a client of ln: X, the only one.
			srv := uint32(ln.Addr().(*net.TCPAddr).Port)
			refused := make(chan uint32, 1) // X's port, once its row is refused
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				w.run(ctx, scope, func(row *ordereddict.Dict) bool {
					if get(row, "Raddr.Port") == srv && get(row, "Diff") == diff {
						refused <- get(row, "Laddr.Port").(uint32)
						return false
					}
					return true
				})
			}()
			waitBaseline(t, state, time.Time{})
			if diff == "added" {
				xCmd, x = holdingChild(t, ln.Addr().String())
			} else {
				if saved := savedPorts(t, state); saved[x].ID == 0 {
					t.Fatalf("X (%d) not in run 1's baseline: %v", x, saved)
				}
				kill(xCmd)
			}
			select {
			case <-ended:
			case <-ctx.Done():
				t.Fatalf("run 1 never refused X's %s row (%d)\nlogs: %s", diff, x, logs)
			}
			if p := <-refused; p != x {
				t.Fatalf("refused the row of port %d, not X's (%d)", p, x)
			}

			_, open := savedPorts(t, state)[x]
			if want := diff == "removed"; open != want {
				t.Errorf("after X's %s row was refused, the state has X open: %v, want %v", diff, open, want)
			}
			got, logs := runWatch(t, trustAtOnce, query, map[uint32]bool{x: true},
				func(r []*ordereddict.Dict) bool { return len(rowsFor(r, x)) > 0 }, 10*time.Second)
			if r := rowsFor(got, x); len(r) != 1 || r[0] != diff+" offline=true" {
				t.Errorf("X, whose %s row was refused: %v, want it %s again, offline\nlogs: %s", diff, r, diff, logs)
			}
		})
	}
}

// A big state is written less often: the average write rate stays under
// timing.bytesPerSecond however many connections the host has.
func TestStateIntervalGrowsWithSize(t *testing.T) {
	for _, tc := range []struct {
		size int
		want time.Duration
	}{
		{0, defaultStateTiming.interval},
		{600 << 10, defaultStateTiming.interval}, // 4,000 connections
		{10 << 20, 80 * time.Second},
	} {
		st := &stateKeeper{timing: defaultStateTiming}
		st.lastSize.Store(int64(tc.size))
		if got := st.interval(); got != tc.want {
			t.Errorf("state of %d bytes: written every %v, want %v", tc.size, got, tc.want)
		}
		if tc.size > 0 && float64(tc.size)/st.interval().Seconds() > float64(defaultStateTiming.bytesPerSecond) {
			t.Errorf("state of %d bytes: %.0f B/s on average", tc.size, float64(tc.size)/st.interval().Seconds())
		}
	}
}

// trustAtOnce counts a row as reported as soon as it is emitted (no lag),
// for tests about what the state holds rather than when.
var trustAtOnce = NetstatWatchPlugin{stateTiming: &stateTiming{
	interval:       defaultStateTiming.interval,
	bytesPerSecond: defaultStateTiming.bytesPerSecond,
}}

// A row emitted less than the lag before the watcher stopped may still
// have been in the client's unsent batch, lost with the process: the next
// run reports it again (Offline) rather than trusting it arrived.
func TestStateLagRepeatsRecentRows(t *testing.T) {
	ln := loopbackServer(t)
	state, query := stateQuery(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rows, logs, ended := watchWith(t, ctx, NetstatWatchPlugin{}, query)
	waitBaseline(t, state, time.Time{}) // no state file yet
	_, x := holdingChild(t, ln.Addr().String())
	seen := false
	for row := range rows {
		if get(row, "Laddr.Port") == x && get(row, "Diff") == "added" {
			seen = true
			break
		}
	}
	cancel()
	for range rows {
	}
	waitPluginEnd(t, ended)
	if !seen {
		t.Fatalf("run 1 did not report X (%d)\nlogs: %s", x, logs)
	}
	if saved := savedPorts(t, state); saved[x].ID != 0 {
		t.Errorf("X was saved as reported right after it was emitted (lag %v)", defaultStateTiming.lag)
	}

	got, _ := runWatch(t, NetstatWatchPlugin{}, query, map[uint32]bool{x: true},
		func(r []*ordereddict.Dict) bool { return len(rowsFor(r, x)) > 0 }, 10*time.Second)
	if r := rowsFor(got, x); len(r) != 1 || r[0] != "added offline=true" {
		t.Errorf("X, emitted just before the stop: %v, want it added again, offline", r)
	}
}

// stateQuery is a state file in a fresh folder and a fast watch over it.
func stateQuery(t *testing.T) (state, query string) {
	state = filepath.Join(t.TempDir(), "netstat_watch.state")
	return state, "SELECT * FROM netstat_watch(period=0.05, kinds='tcp', state='" + state + "')"
}
