package e2e

// Helpers shared by the end-to-end tests: the connecting child processes,
// listeners, waiting for rows and webhooks, and the final check that
// nothing is left running.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
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

	"github.com/netwatch-dfir/netwatch/tools/deploy"
	"github.com/netwatch-dfir/netwatch/tools/webhook"
)

// needBinary returns the custom binary (NETWATCH_BINARY), the test
// binary (which is also the connecting child) and the child's process
// name as the kernel reports it; it skips the test where it cannot run.
func needBinary(t *testing.T) (binary, exe, processName string) {
	t.Helper()
	binary = os.Getenv("NETWATCH_BINARY")
	if binary == "" {
		t.Skip("NETWATCH_BINARY is not set: run through `make test`, or " +
			"NETWATCH_BINARY=$PWD/build/velociraptor go test ./tools/e2e")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the end-to-end tests run on Linux (netstat_watch's netlink collector)")
	}
	if _, err := os.Stat(binary); err != nil {
		t.Fatalf("NETWATCH_BINARY: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	processName = filepath.Base(exe)
	if len(processName) > 15 { // the kernel's comm
		processName = processName[:15]
	}
	return binary, exe, processName
}

// childEnv makes the test binary act as the connecting child process: see
// TestMain and runChild.
const childEnv = "NETWATCH_E2E_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

// runChild connects to ADDR, prints its local address, holds the
// connection for HOLD milliseconds and closes it. spec is "ADDR HOLD".
func runChild(spec string) int {
	f := strings.Fields(spec)
	if len(f) != 2 {
		fmt.Fprintln(os.Stderr, "child: bad spec", spec)
		return 2
	}
	hold, _ := strconv.Atoi(f[1])
	c, err := net.DialTimeout("tcp", f[0], 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fmt.Printf("LADDR %s\n", c.LocalAddr())
	time.Sleep(time.Duration(hold) * time.Millisecond)
	c.Close()
	return 0
}

// conn is one connection made by a child process.
type conn struct {
	pid       int
	localPort int
	raddr     string
	started   time.Time
}

// connector starts children and keeps track of them, so that the test can
// check none is left.
type connector struct {
	t    *testing.T
	exe  string
	mu   sync.Mutex
	wg   sync.WaitGroup
	pids []int
}

// connect starts a child that connects to addr and holds the connection
// for hold; it returns once the child is connected.
func (c *connector) connect(ctx context.Context, addr string, hold time.Duration) conn {
	c.t.Helper()
	cmd := exec.CommandContext(ctx, c.exe)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d", childEnv, addr, hold.Milliseconds()))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("starting child: %v", err)
	}
	c.mu.Lock()
	c.pids = append(c.pids, cmd.Process.Pid)
	c.mu.Unlock()

	line := make([]byte, 0, 64)
	buf := make([]byte, 1)
	for {
		n, err := out.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				break
			}
			line = append(line, buf[0])
		}
		if err != nil {
			_ = cmd.Wait()
			c.t.Fatalf("child connecting to %s: %v: %s", addr, err, stderr.String())
		}
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_, _ = io.Copy(io.Discard, out)
		if err := cmd.Wait(); err != nil && ctx.Err() == nil {
			c.t.Errorf("child connecting to %s: %v: %s", addr, err, stderr.String())
		}
	}()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(string(line), "LADDR "))
	if err != nil {
		c.t.Fatalf("child output %q: %v", line, err)
	}
	lp, _ := strconv.Atoi(port)
	return conn{pid: cmd.Process.Pid, localPort: lp, raddr: addr, started: started}
}

// listener accepts connections on addr and holds each until its peer
// closes it.
type listener struct {
	net.Listener
	port int
	wg   sync.WaitGroup
}

func listen(t *testing.T, host string) *listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", host, err)
	}
	l := &listener{Listener: ln, port: ln.Addr().(*net.TCPAddr).Port}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(15 * time.Second))
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); l.wg.Wait() })
	return l
}

func (l *listener) addr() string { return l.Addr().String() }

// within runs f with a context bounded by d (and the test's).
func within(ctx context.Context, d time.Duration, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx)
}

// waitLive makes connections to addr (one every few seconds, bounded)
// until one of them alerts, and returns that one.
func waitLive(ctx context.Context, t *testing.T, children *connector, hook *webhook.Receiver,
	addr string, match func(webhook.Alert) bool) conn {
	t.Helper()
	return waitLiveHold(ctx, t, children, hook, addr, 300*time.Millisecond, match)
}

// waitLiveHold is waitLive with connections held for hold: at least two
// periods of the client artifact, so that it sees them with their
// process (a shorter one is reported through its TIME_WAIT remnant,
// without one, which a process filter drops).
func waitLiveHold(ctx context.Context, t *testing.T, children *connector, hook *webhook.Receiver,
	addr string, hold time.Duration, match func(webhook.Alert) bool) conn {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	tried := map[int]conn{}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		c := children.connect(ctx, addr, hold)
		tried[c.pid] = c
		var got webhook.Alert
		err := within(ctx, 5*time.Second, func(ctx context.Context) error {
			var err error
			got, err = hook.Wait(ctx, func(a webhook.Alert) bool {
				_, ours := tried[a.Process.Pid]
				return ours && match(a)
			})
			return err
		})
		if err == nil {
			return tried[got.Process.Pid]
		}
	}
	t.Fatalf("no alert for connections to %s after %d attempts; webhooks received: %s",
		addr, len(tried), summarize(hook.Alerts()))
	return conn{}
}

// waitRows polls the client's monitoring results from `from` on until ok.
func waitRows(ctx context.Context, t *testing.T, d *deploy.Deployment, clientID string,
	from time.Time, ok func([]deploy.Row) bool) []deploy.Row {
	t.Helper()
	var rows []deploy.Row
	var err error
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		rows, err = d.Query(ctx, `
SELECT * FROM source(client_id=NetwatchClient, artifact=NetwatchArtifact,
                     start_time=int(int=NetwatchFrom), end_time=now() + 60)`,
			map[string]string{"NetwatchClient": clientID, "NetwatchArtifact": deploy.ClientArtifact,
				"NetwatchFrom": strconv.FormatInt(from.Unix(), 10)})
		if err == nil && ok(rows) {
			return rows
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("monitoring results incomplete after 45 s (%d rows, err %v)", len(rows), err)
	return nil
}

func filterRows(rows []deploy.Row, pid, rport int, diff string) []deploy.Row {
	var out []deploy.Row
	for _, r := range rows {
		raddr, _ := r["Raddr"].(map[string]any)
		if num(r["Pid"]) == pid && num(raddr["Port"]) == rport && r["Diff"] == diff {
			out = append(out, r)
		}
	}
	return out
}

// checkNothingLeft: the velociraptor processes and every child are gone, its ports are
// free and no process refers to the datastore.
func checkNothingLeft(t *testing.T, vrPids []int, dir string, ports deploy.Ports, children *connector) {
	t.Helper()
	for _, vrPid := range vrPids {
		if vrPid > 0 && syscall.Kill(vrPid, 0) == nil {
			t.Errorf("velociraptor (pid %d) still running after Stop", vrPid)
		}
	}
	children.mu.Lock()
	pids := append([]int(nil), children.pids...)
	children.mu.Unlock()
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("child pid %d still running", pid)
		}
	}
	self := os.Getpid()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if pid == self {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(p, "stat"))
		if err != nil {
			continue
		}
		// ppid is the 2nd field after the parenthesised comm.
		if i := bytes.LastIndexByte(stat, ')'); i > 0 {
			f := strings.Fields(string(stat[i+1:]))
			if len(f) > 1 && f[1] == strconv.Itoa(self) {
				cmd, _ := os.ReadFile(filepath.Join(p, "cmdline"))
				t.Errorf("process %d (%s) started by the test is still there", pid, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
			}
		}
		if cmd, err := os.ReadFile(filepath.Join(p, "cmdline")); err == nil && bytes.Contains(cmd, []byte(dir)) {
			t.Errorf("process %d still refers to %s: %s", pid, dir, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
		}
	}
	for name, port := range map[string]int{"frontend": ports.Frontend, "API": ports.API, "GUI": ports.GUI, "monitoring": ports.Monitoring} {
		if !deploy.PortFree(port) {
			t.Errorf("%s port %d still in use after Stop", name, port)
		}
	}
}

func summarize(alerts []webhook.Alert) string {
	if len(alerts) == 0 {
		return "none"
	}
	var parts []string
	for _, a := range alerts {
		parts = append(parts, fmt.Sprintf("[pid %d %s -> %s: %s]", a.Process.Pid, a.Process.Name, a.Raddr, a.Text))
	}
	return strings.Join(parts, " ")
}

func num(v any) int {
	switch x := v.(type) {
	case float64:
		return int(x)
	case int:
		return x
	case string:
		n, _ := strconv.Atoi(x)
		return n
	}
	return -1 << 31
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// workDir is the deployment's folder: a temporary one, or, to look at the
// logs and the datastore after a run, NETWATCH_E2E_KEEP/TestName (emptied
// first).
func workDir(t *testing.T) string {
	t.Helper()
	keep := os.Getenv("NETWATCH_E2E_KEEP")
	if keep == "" {
		return t.TempDir()
	}
	dir := filepath.Join(keep, t.Name())
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// guiRun is a `gui` deployment (a server and its in-process client) with a
// webhook receiver and the connecting children: the setup of the tests
// that do not restart processes. With NETWATCH_SERVER_BINARY (stockServer)
// the server is that binary alone, given the artifact pack, and the client
// is the netwatch binary in a process of its own.
type guiRun struct {
	d        *deploy.Deployment
	dir      string
	client   deploy.Client
	clientP  *deploy.Process // the separate client, with a stock server
	hook     *webhook.Receiver
	children *connector
	stopped  bool
}

// stockServer is NETWATCH_SERVER_BINARY: a Velociraptor without netwatch
// code to run as the server, as docs/SECURITY.md recommends; "" when unset.
// NETWATCH_PACK is the artifact pack it is given (default the one `make
// pack` writes).
func stockServer() (server, pack string) {
	server = os.Getenv("NETWATCH_SERVER_BINARY")
	if server == "" {
		return "", ""
	}
	pack = os.Getenv("NETWATCH_PACK")
	if pack == "" {
		pack = filepath.Join("..", "..", "build", "netwatch-artifacts.zip")
	}
	return server, pack
}

// needNetwatchServer skips a test that relies on the netwatch server
// (netwatch_webhook()'s queue, or a rig restarting the server with its
// in-process client) when the server is a stock one.
func needNetwatchServer(t *testing.T) {
	t.Helper()
	if server, _ := stockServer(); server != "" {
		t.Skipf("needs the netwatch server; NETWATCH_SERVER_BINARY=%s is a stock one", server)
	}
}

// startGUI starts the deployment in workDir(t) and waits for its client;
// the cleanup stops everything (and shows the log's end on failure).
func startGUI(ctx context.Context, t *testing.T, binary, exe string) *guiRun {
	t.Helper()
	start := time.Now()
	g := &guiRun{dir: workDir(t), children: &connector{t: t, exe: exe}}
	opts := deploy.Options{Binary: binary, Dir: g.dir}
	server, pack := stockServer()
	if server != "" {
		opts = deploy.Options{Binary: server, ClientBinary: binary, Dir: g.dir, NoClient: true}
	}
	var err error
	if g.hook, err = webhook.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := within(ctx, 2*time.Minute, func(ctx context.Context) error {
		g.d, err = deploy.Start(ctx, opts)
		return err
	}); err != nil {
		g.hook.Close()
		t.Fatal(err)
	}
	t.Cleanup(g.stop)
	t.Cleanup(func() { // runs first
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", g.d.LogPath, g.d.LogTail(20))
			if g.clientP != nil {
				t.Logf("last lines of %s:\n%s", g.clientP.LogPath, g.clientP.LogTail(20))
			}
		}
	})
	t.Logf("deployment up in %v: GUI %s, ports %+v", time.Since(start).Round(time.Millisecond), g.d.GUIURL, g.d.Ports)
	if server != "" {
		version, err := g.d.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		names, err := g.d.ImportPack(ctx, pack)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("stock server %s (Velociraptor %s): imported %s from %s", server, version, strings.Join(names, ", "), pack)
		if g.clientP, err = g.d.StartClient(ctx, deploy.ClientOptions{Name: "netwatch"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := within(ctx, 90*time.Second, func(ctx context.Context) error {
		g.client, err = g.d.WaitClient(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("client %s (%s) enrolled after %v", g.client.ID, g.client.Fqdn, time.Since(start).Round(time.Millisecond))
	return g
}

// pids are the velociraptor processes of the run.
func (g *guiRun) pids() []int {
	pids := []int{g.d.Pid()}
	if g.clientP != nil {
		pids = append(pids, g.clientP.Pid())
	}
	return pids
}

// stop ends velociraptor, the receiver and the children, once.
func (g *guiRun) stop() {
	if g.stopped {
		return
	}
	g.stopped = true
	if g.clientP != nil {
		g.clientP.Stop()
	}
	g.d.Stop()
	g.hook.Close()
	g.children.wg.Wait()
}
