package netstat_watch

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/Velocidex/ordereddict"
	"go.uber.org/goleak"
	acl_proto "www.velocidex.com/golang/velociraptor/acls/proto"
	vql_subsystem "www.velocidex.com/golang/velociraptor/vql"
	"www.velocidex.com/golang/velociraptor/vql/acl_managers"
	"www.velocidex.com/golang/vfilter"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
)

// The test binary doubles as the short-lived client process: a real process
// with its own PID and name, as in the field.
func TestMain(m *testing.M) {
	switch os.Getenv("NETWATCH_HELPER") {
	case "tcp":
		helperTCP(os.Args[1], os.Args[2])
	case "udp":
		helperUDP(os.Args[1], os.Args[2])
	case "watch":
		helperWatch(os.Args[1])
	case "serve":
		helperServe(os.Args[1], os.Args[2])
	case "churn":
		helperChurn(os.Args[1], os.Args[2])
	default:
		os.Exit(m.Run())
	}
}

// helperServe listens on addr, prints its port, accepts one connection,
// holds it for the given time, closes it and exits.
func helperServe(addr, hold string) {
	d, _ := time.ParseDuration(hold)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	c, err := ln.Accept()
	if err != nil {
		os.Exit(1)
	}
	time.Sleep(d)
	c.Close()
	os.Exit(0)
}

// helperTCP connects to addr, prints its local port, holds the connection
// for the given time and closes it first (so its side enters TIME_WAIT).
func helperTCP(addr, hold string) {
	d, _ := time.ParseDuration(hold)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println(c.LocalAddr().(*net.TCPAddr).Port)
	time.Sleep(d)
	c.Close()
	os.Exit(0)
}

// helperWatch runs the plugin for a while next to a listener of its own
// and prints "ROW pid port" per added row and "LOG line" per log line.
func helperWatch(query string) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	defer ln.Close()
	fmt.Println("OWN", ln.Addr().(*net.TCPAddr).Port)
	logs := &testutil.QueryLog{}
	scope := vql_subsystem.MakeScope().AppendVars(ordereddict.NewDict().
		Set(vql_subsystem.ACL_MANAGER_VAR, acl_managers.NullACLManager{}))
	scope.SetLogger(logs.Logger())
	vql, _ := vfilter.Parse(query)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for row := range vql.Eval(ctx, scope) {
		r := vfilter.RowToDict(ctx, scope, row)
		fmt.Println("ROW", get(r, "Pid"), get(r, "Laddr.Port"))
	}
	scope.Close()
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		fmt.Println("LOG", l)
	}
	os.Exit(0)
}

func helperUDP(addr, hold string) {
	d, _ := time.ParseDuration(hold)
	c, err := net.Dial("udp", addr)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	c.Write([]byte("ping"))
	fmt.Println(c.LocalAddr().(*net.UDPAddr).Port)
	time.Sleep(d)
	c.Close()
	os.Exit(0)
}

// watch runs a VQL query in a fresh scope and streams its rows.
func watch(t *testing.T, ctx context.Context, query string) (<-chan *ordereddict.Dict, *testutil.QueryLog) {
	t.Helper()
	rows, logs, _ := watchWith(t, ctx, NetstatWatchPlugin{}, query)
	return rows, logs
}

// watchWith is watch with netstat_watch() being plugin (e.g. other state
// timings) in that scope. ended closes when the plugin's own row channel
// does, which it does last (after the final state write): the query's rows
// end earlier when it is cancelled.
func watchWith(t *testing.T, ctx context.Context, plugin NetstatWatchPlugin, query string) (
	rows <-chan *ordereddict.Dict, logs *testutil.QueryLog, ended <-chan struct{}) {
	t.Helper()
	logs = &testutil.QueryLog{}
	scope := vql_subsystem.MakeScope().AppendVars(ordereddict.NewDict().
		Set(vql_subsystem.ACL_MANAGER_VAR, acl_managers.NullACLManager{}))
	end := make(chan struct{})
	scope.AppendPlugins(endNotifier{plugin, end})
	scope.SetLogger(logs.Logger())
	vql, err := vfilter.Parse(query)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *ordereddict.Dict)
	go func() {
		defer close(out)
		defer scope.Close()
		rows := vql.Eval(ctx, scope)
		for row := range rows {
			select {
			case out <- vfilter.RowToDict(ctx, scope, row):
			case <-ctx.Done():
				// Rows keep coming until the plugin sees ctx (with kernel
				// events, any connection on the host): drain them, or
				// vfilter's sender blocks for ever.
				for range rows {
				}
				return
			}
		}
	}()
	// Past the start line, kernel events are attached: a connection made
	// from then on is reported (polling: after the first snapshot).
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), pluginName+":") &&
		time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(10 * time.Millisecond)
	}
	return out, logs, end
}

// endNotifier is netstat_watch() closing end when the plugin's row channel
// closes (a query calling it once).
type endNotifier struct {
	NetstatWatchPlugin
	end chan struct{}
}

func (self endNotifier) Call(ctx context.Context, scope vfilter.Scope, args *ordereddict.Dict) <-chan vfilter.Row {
	in := self.NetstatWatchPlugin.Call(ctx, scope, args)
	out := make(chan vfilter.Row)
	go func() {
		defer close(self.end)
		defer close(out)
		for row := range in {
			select {
			case out <- row:
			case <-ctx.Done():
				// The plugin sees ctx too; what it still sends is dropped.
			}
		}
	}()
	return out
}

// waitPluginEnd waits until the plugin's row channel has closed: its
// goroutines have ended and its final state is written by then.
func waitPluginEnd(t *testing.T, ended <-chan struct{}) {
	t.Helper()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("plugin still running 5 s after the query was cancelled")
	}
}

// logLines counts the plugin's log lines but the stop line of kernel
// events (its figures: records read, dropped).
func logLines(logs *testutil.QueryLog) int {
	l := logs.String()
	return strings.Count(l, pluginName+":") - strings.Count(l, pluginName+": stopped:")
}

// get resolves a dotted column the way VQL does (Laddr.Port,
// ProcInfo.Data.Name), whatever the value's Go type.
func get(row *ordereddict.Dict, path string) any {
	scope := vql_subsystem.MakeScope()
	var cur any = row
	for _, part := range strings.Split(path, ".") {
		v, ok := scope.Associative(cur, part)
		if !ok {
			return nil
		}
		cur = v
	}
	return cur
}

// startChild runs this test binary as a helper client and returns its PID
// and the local port of its socket.
func startChild(t *testing.T, mode, addr string, hold time.Duration) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], addr, hold.String())
	cmd.Env = append(os.Environ(), "NETWATCH_HELPER="+mode)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var port int
	if _, err := fmt.Fscan(stdout, &port); err != nil {
		t.Fatalf("helper: %v", err)
	}
	go io.Copy(io.Discard, stdout)
	return cmd, port
}

// collectFor gathers rows about one local port until quiet has passed with
// nothing new after the last one, or ctx ends.
func collectFor(ctx context.Context, rows <-chan *ordereddict.Dict, match func(*ordereddict.Dict) bool,
	until func([]*ordereddict.Dict) bool, quiet time.Duration) []*ordereddict.Dict {
	var got []*ordereddict.Dict
	var deadline <-chan time.Time
	for {
		select {
		case row, ok := <-rows:
			if !ok {
				return got
			}
			if match(row) {
				got = append(got, row)
				if until(got) && deadline == nil {
					deadline = time.After(quiet)
				}
			}
		case <-deadline:
			return got
		case <-ctx.Done():
			return got
		}
	}
}

func hasRemoved(rows []*ordereddict.Dict) bool {
	for _, r := range rows {
		if get(r, "Diff") == "removed" {
			return true
		}
	}
	return false
}

func TestShortConnectionFromChildProcess(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			host := "127.0.0.1"
			if network == "tcp6" {
				host = "::1"
			}
			ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
			if err != nil {
				t.Skipf("%s loopback unavailable: %v", network, err)
			}
			defer ln.Close()
			testutil.Serve(ln) // reads until the client closes
			lport := ln.Addr().(*net.TCPAddr).Port

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rows, logs := watch(t, ctx, "SELECT * FROM netstat_watch(period=0.1, kinds=['tcp', 'tcp6'])")
			time.Sleep(300 * time.Millisecond) // past the baseline

			cmd, cport := startChild(t, "tcp", ln.Addr().String(), 300*time.Millisecond)
			pid := cmd.Process.Pid
			defer cmd.Wait()

			got := collectFor(ctx, rows, func(r *ordereddict.Dict) bool {
				return get(r, "Laddr.Port") == uint32(cport) && get(r, "Raddr.Port") == uint32(lport)
			}, hasRemoved, time.Second)

			var added, removed []*ordereddict.Dict
			for _, r := range got {
				switch get(r, "Diff") {
				case "added":
					added = append(added, r)
				case "removed":
					removed = append(removed, r)
				}
			}
			if len(added) != 1 || len(removed) != 1 {
				t.Fatalf("want 1 added and 1 removed, got %d and %d: %v\nlogs: %s", len(added), len(removed), got, logs)
			}
			a, r := added[0], removed[0]
			if get(a, "Pid") != int32(pid) || get(r, "Pid") != int32(pid) {
				t.Errorf("Pid: added %v removed %v, want %d", get(a, "Pid"), get(r, "Pid"), pid)
			}
			wantName := filepath.Base(os.Args[0])
			if n := get(a, "ProcInfo.Data.Name"); n != wantName {
				t.Errorf("ProcInfo.Data.Name = %v, want %s", n, wantName)
			}
			if n := get(r, "ProcInfo.Data.Name"); n != wantName {
				t.Errorf("removed row ProcInfo.Data.Name = %v, want %s", n, wantName)
			}
			// A snapshot may catch the handshake itself (SENT).
			if st := get(a, "Status"); get(a, "Direction") != "outbound" || st != "ESTAB" && st != "SENT" {
				t.Errorf("added row: Direction %v Status %v", get(a, "Direction"), get(a, "Status"))
			}
			wantFamily := "IPv4"
			if network == "tcp6" {
				wantFamily = "IPv6"
			}
			if get(a, "FamilyString") != wantFamily || get(a, "TypeString") != "TCP" {
				t.Errorf("FamilyString %v TypeString %v", get(a, "FamilyString"), get(a, "TypeString"))
			}
			d, ok := get(r, "Duration").(float64)
			if !ok || d < 0.2 || d > 2 {
				t.Errorf("Duration = %v, want about 0.3 s", get(r, "Duration"))
			}
			if logLines(logs) != 1 {
				t.Errorf("want exactly one log line, got:\n%s", logs)
			}
			if f := testutil.FailingLines(logs.String()); len(f) > 0 {
				t.Errorf("a working watch would be marked failed: %q", f)
			}
		})
	}
}

func TestConnectedUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	sport := pc.LocalAddr().(*net.UDPAddr).Port

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rows, logs := watch(t, ctx, "SELECT * FROM netstat_watch(period=0.1, kinds='udp')")
	time.Sleep(300 * time.Millisecond)

	cmd, cport := startChild(t, "udp", pc.LocalAddr().String(), 500*time.Millisecond)
	defer cmd.Wait()
	got := collectFor(ctx, rows, func(r *ordereddict.Dict) bool {
		return get(r, "Laddr.Port") == uint32(cport)
	}, hasRemoved, 500*time.Millisecond)
	if len(got) != 2 || get(got[0], "Diff") != "added" || get(got[1], "Diff") != "removed" {
		t.Fatalf("want added then removed, got %v\nlogs: %s", got, logs)
	}
	a := got[0]
	if get(a, "Pid") != int32(cmd.Process.Pid) || get(a, "TypeString") != "UDP" ||
		get(a, "Raddr.Port") != uint32(sport) || get(a, "Direction") != "outbound" {
		t.Errorf("added row: %v", a)
	}
}

func TestArgErrors(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"period=0", "period"},
		{"period=-1", "period"},
		{"period=0.001", "period"},
		{"period='x'", "period"},
		{"kinds=['tcp', 'sctp']", `"sctp"`},
		{"backend='kprobe'", "backend"},
		{"reconcile=0.5", "reconcile"},
		{"ring_size=3", "ring_size"},
		{"cache_size=0", "cache_size"},
		{"exclude_networks=['10.0.0.0/8', '10.0.0.300']", `"10.0.0.300"`},
		{"exclude_networks=['10.0.0.0/33']", `"10.0.0.0/33"`},
		{"exclude_pids=['init']", "exclude_pids"},
	} {
		t.Run(tc.args, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			rows, logs := watch(t, ctx, "SELECT * FROM netstat_watch("+tc.args+")")
			for range rows {
				t.Error("row emitted despite a bad argument")
			}
			if ctx.Err() != nil {
				t.Fatal("plugin did not stop on a bad argument")
			}
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("log %q does not name %s", logs, tc.want)
			}
			// Velociraptor marks the collection failed only for an
			// error it recognises.
			if f := testutil.FailingLines(logs.String()); len(f) != 1 || !strings.Contains(f[0], tc.want) {
				t.Errorf("Velociraptor would not mark the query failed: failing lines %q of %q", f, logs)
			}
		})
	}
}

func TestRequiresMachineState(t *testing.T) {
	logs := &testutil.QueryLog{}
	scope := vql_subsystem.MakeScope().AppendVars(ordereddict.NewDict().
		Set(vql_subsystem.ACL_MANAGER_VAR, acl_managers.NewRoleACLManager(nil, "reader")))
	scope.SetLogger(logs.Logger())
	defer scope.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range (NetstatWatchPlugin{}).Call(ctx, scope, ordereddict.NewDict()) {
		t.Error("row emitted without MACHINE_STATE")
	}
	if !strings.Contains(logs.String(), "Permission denied") {
		t.Errorf("log: %q", logs)
	}
	if len(testutil.FailingLines(logs.String())) == 0 {
		t.Errorf("Velociraptor would not mark the query failed: %q", logs)
	}
}

// A state file is written where the caller says: that needs
// FILESYSTEM_WRITE besides MACHINE_STATE, and nothing is written without it.
func TestStateRequiresFilesystemWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	for _, tc := range []struct {
		name   string
		policy *acl_proto.ApiClientACL
		denied bool
	}{
		{"machine state only", &acl_proto.ApiClientACL{MachineState: true}, true},
		{"machine state and filesystem write", &acl_proto.ApiClientACL{MachineState: true, FilesystemWrite: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testutil.QueryLog{}
			scope := vql_subsystem.MakeScope().AppendVars(ordereddict.NewDict().
				Set(vql_subsystem.ACL_MANAGER_VAR, &acl_managers.RoleACLManager{Token: tc.policy}))
			scope.SetLogger(logs.Logger())
			defer scope.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			for range (NetstatWatchPlugin{}).Call(ctx, scope, ordereddict.NewDict().
				Set("state", path).Set("period", 0.1)) {
			}
			_, statErr := os.Stat(path)
			if tc.denied {
				if log := logs.String(); !strings.Contains(log, "state: PermissionDenied") ||
					!strings.Contains(log, "FILESYSTEM_WRITE") {
					t.Errorf("log %q does not refuse the state file", logs)
				}
				if statErr == nil {
					t.Error("state file written without FILESYSTEM_WRITE")
				}
				return
			}
			if strings.Contains(logs.String(), "Permission denied") {
				t.Errorf("refused with FILESYSTEM_WRITE: %q", logs)
			}
			if statErr != nil {
				t.Errorf("state file not written at the end of the query: %v", statErr)
			}
		})
	}
}

func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// Cancelling the query ends the plugin within a period and leaves no
// goroutine or fd behind.
func TestCancelStopsPromptly(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("fd accounting via /proc")
	}
	// Every goroutine started from here on must be gone at the end (goleak
	// retries for a while: vfilter's own helpers wind down asynchronously).
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	baseFD := openFDs(t)
	// A long period shows the plugin does not wait for its next tick; the
	// bound leaves room for a loaded machine.
	// With a state file too: its writer goroutine ends as well.
	state := filepath.Join(t.TempDir(), "state")
	for _, args := range []string{"period=0.05", "period=5", "period=0.05, state='" + state + "'"} {
		ctx, cancel := context.WithCancel(context.Background())
		rows, _, ended := watchWith(t, ctx, NetstatWatchPlugin{}, "SELECT * FROM netstat_watch("+args+")")
		time.Sleep(200 * time.Millisecond)
		cancel()
		start := time.Now()
		for range rows {
		}
		waitPluginEnd(t, ended)
		if el := time.Since(start); el > time.Second {
			t.Errorf("%s: plugin took %v to stop after cancel", args, el)
		}
	}
	if fd := openFDs(t); fd > baseFD {
		t.Errorf("open fds: %d before, %d after", baseFD, fd)
	}
}
