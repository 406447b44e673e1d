package e2e

import (
	"context"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/tools/deploy"
)

// rig is a server started with `gui --noclient` and clients as separate
// processes (the restart and load tests): each can be stopped, killed and
// started again on its own.
type rig struct {
	t        *testing.T
	ctx      context.Context
	binary   string
	dir      string
	d        *deploy.Deployment
	children *connector

	mu    sync.Mutex
	procs []*deploy.Process // every client or pool process started
	pids  []int             // every velociraptor process started
}

// clientParams: as in TestEndToEnd. All test traffic is loopback, which
// the client artifact drops by default; only outbound TCP, so the test's
// own accepted sockets stay out; a 0.1 s period sees every child's
// connection with its process.
var clientParams = map[string]string{
	"ExcludeLoopback": "N",
	"OnlyOutbound":    "Y",
	"Kinds":           `["tcp"]`,
	"Period":          "0.1",
}

func newRig(ctx context.Context, t *testing.T, binary, exe string) *rig {
	needNetwatchServer(t)
	dir := workDir(t)
	r := &rig{t: t, ctx: ctx, binary: binary, dir: dir, children: &connector{t: t, exe: exe}}
	t.Cleanup(r.stopAll)
	t.Cleanup(func() {
		if t.Failed() && r.d != nil {
			t.Logf("last lines of %s:\n%s", r.d.LogPath, r.d.LogTail(15))
		}
	})
	return r
}

// startServer starts the server alone; with ports set, on exactly those
// (a restart on the same folder, whose clients know the frontend port).
func (r *rig) startServer(ports deploy.Ports) time.Duration {
	r.t.Helper()
	start := time.Now()
	err := within(r.ctx, 2*time.Minute, func(ctx context.Context) error {
		d, err := deploy.Start(ctx, deploy.Options{Binary: r.binary, Dir: r.dir, NoClient: true,
			Ports: ports, ExactPorts: ports != deploy.Ports{}})
		if err == nil {
			r.mu.Lock()
			r.d = d
			r.pids = append(r.pids, d.Pid())
			r.mu.Unlock()
		}
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return time.Since(start)
}

// startMonitored starts the server (on free ports) and one client, waits
// for its enrolment and gives it the client artifact; it returns the
// client and its ID.
func (r *rig) startMonitored(name string) (*deploy.Process, string) {
	r.t.Helper()
	r.startServer(deploy.Ports{})
	client := r.startClient(name)
	id := r.waitClientID(client)
	if err := r.d.SetClientMonitoring(r.ctx, deploy.ClientArtifact, clientParams); err != nil {
		r.t.Fatal(err)
	}
	return client, id
}

// startClient starts (or starts again) the client process of that name.
func (r *rig) startClient(name string) *deploy.Process {
	r.t.Helper()
	p, err := r.d.StartClient(r.ctx, deploy.ClientOptions{Name: name})
	if err != nil {
		r.t.Fatal(err)
	}
	r.track(p)
	return p
}

func (r *rig) track(p *deploy.Process) {
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.pids = append(r.pids, p.Pid())
	r.mu.Unlock()
}

// waitClientID waits until the client process has enrolled and the server
// lists it, and returns its ID.
func (r *rig) waitClientID(p *deploy.Process) string {
	r.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) && r.ctx.Err() == nil {
		if id := p.ClientID(); id != "" {
			clients, err := r.d.Clients(r.ctx)
			if err == nil {
				for _, c := range clients {
					if c.ID == id {
						return id
					}
				}
			}
		}
		select {
		case <-p.Done():
			r.t.Fatalf("%s exited:\n%s", p.Name, p.LogTail(20))
		case <-time.After(300 * time.Millisecond):
		}
	}
	r.t.Fatalf("%s did not enrol within 90 s:\n%s", p.Name, p.LogTail(20))
	return ""
}

// stopAll stops every process the rig started and waits for the
// children; safe to call more than once.
func (r *rig) stopAll() {
	r.mu.Lock()
	procs, d := r.procs, r.d
	r.mu.Unlock()
	for _, p := range procs {
		p.Stop()
	}
	if d != nil {
		d.Stop()
	}
	r.children.wg.Wait()
}

// checkNothingLeft stops everything and checks that no process, child or
// port is left.
func (r *rig) checkNothingLeft() {
	r.t.Helper()
	r.stopAll()
	r.mu.Lock()
	pids := append([]int(nil), r.pids...)
	r.mu.Unlock()
	checkNothingLeft(r.t, pids, r.dir, r.d.Ports, r.children)
}

// rowsSince returns the client's monitoring rows from `from` on.
func (r *rig) rowsSince(clientID string, from time.Time) ([]deploy.Row, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	return r.d.Query(ctx, `
SELECT * FROM source(client_id=NetwatchClient, artifact=NetwatchArtifact,
                     start_time=int(int=NetwatchFrom), end_time=now() + 60)`,
		map[string]string{"NetwatchClient": clientID, "NetwatchArtifact": deploy.ClientArtifact,
			"NetwatchFrom": strconv.FormatInt(from.Unix(), 10)})
}

// waitMonitoringLive makes short connections to addr (one every few
// seconds, bounded) until one of them shows in the client's monitoring
// results: the client has its event table and its rows reach the server.
func (r *rig) waitMonitoringLive(clientID, addr string) conn {
	r.t.Helper()
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	from := time.Now().Add(-2 * time.Second)
	deadline := time.Now().Add(90 * time.Second)
	var tried []conn
	for time.Now().Before(deadline) && r.ctx.Err() == nil {
		c := r.children.connect(r.ctx, addr, 300*time.Millisecond)
		tried = append(tried, c)
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
			rows, err := r.rowsSince(clientID, from)
			if err == nil {
				for _, c := range tried {
					if len(filterRows(rows, c.pid, port, "added")) > 0 {
						return c
					}
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	r.t.Fatalf("no monitoring row for %d connections to %s", len(tried), addr)
	return conn{}
}

// dialLoop makes a short connection to addr from the test process itself
// every period until stop is closed: a steady stream of client events.
func dialLoop(addr string, period time.Duration, stop <-chan struct{}) (wait func() []int) {
	var wg sync.WaitGroup
	var ports []int // the local port of each connection made
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				ports = append(ports, c.LocalAddr().(*net.TCPAddr).Port)
				c.Close()
			}
		}
	}()
	return func() []int { wg.Wait(); return ports }
}

// logErrors returns the ERROR lines (and panics) of a velociraptor log
// written after the line holding marker.
var errorLine = regexp.MustCompile(`\[ERROR\]|panic:|goroutine \d+ \[`)

func logErrors(path, marker string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	s := string(b)
	if i := strings.LastIndex(s, marker); i >= 0 {
		s = s[i:]
	}
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if errorLine.MatchString(line) {
			out = append(out, line)
		}
	}
	return out
}

// grepLog returns the last max lines of the log at path, from its last
// start on, that match re.
func grepLog(path, re string, max int) string {
	b, _ := os.ReadFile(path)
	s := string(b)
	if i := strings.LastIndex(s, "===== netwatch deploy: starting"); i >= 0 {
		s = s[i:]
	}
	m := regexp.MustCompile(re)
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if m.MatchString(line) {
			out = append(out, line)
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return strings.Join(out, "\n")
}
