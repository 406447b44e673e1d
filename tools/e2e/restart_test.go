package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/tools/deploy"
	"github.com/netwatch-dfir/netwatch/tools/webhook"
)

// TestClientRestart kills the client process (SIGKILL, while it streams
// events) and starts it again: it comes back as the same client, its
// artifact runs again, a connection it had already reported is not
// reported a second time, and a new one is reported.
func TestClientRestart(t *testing.T) {
	binary, exe, _ := needBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	testStart := time.Now()

	target := listen(t, "127.0.0.1") // the connections under test
	stream := listen(t, "127.0.0.1") // probes
	burst := listen(t, "127.0.0.1")  // the events in flight at the kill
	r := newRig(ctx, t, binary, exe)
	client, id := r.startMonitored("c1")
	r.waitMonitoringLive(id, stream.addr())
	t.Logf("client %s enrolled and monitoring after %v", id, time.Since(testStart).Round(time.Millisecond))

	// A: open for the whole test, reported once.
	ctxA, closeA := context.WithCancel(ctx)
	defer closeA()
	a := r.children.connect(ctxA, target.addr(), 10*time.Minute)
	waitRows(ctx, t, r.d, id, testStart, func(rows []deploy.Row) bool {
		return len(filterRows(rows, a.pid, target.port, "added")) > 0
	})

	// Kill the client while it reports a connection every 50 ms.
	stop := make(chan struct{})
	streamed := dialLoop(burst.addr(), 50*time.Millisecond, stop)
	time.Sleep(3 * time.Second)
	killed := time.Now()
	client.Kill()
	close(stop)
	burstMade := streamed()

	// C: opened while the client is down, and still open when it starts.
	ctxC, closeC := context.WithCancel(ctx)
	defer closeC()
	c := r.children.connect(ctxC, target.addr(), 10*time.Minute)
	time.Sleep(500 * time.Millisecond)

	restarted := time.Now()
	client = r.startClient("c1")
	if again := r.waitClientID(client); again != id {
		t.Fatalf("restarted client enrolled as %s, want %s (same writeback)", again, id)
	}
	// Its artifact starts when the event table reaches it: probe, then B.
	r.waitMonitoringLive(id, stream.addr())
	b := r.children.connect(ctx, target.addr(), 500*time.Millisecond)
	rows := waitRows(ctx, t, r.d, id, testStart, func(rows []deploy.Row) bool {
		return len(filterRows(rows, b.pid, target.port, "added")) > 0
	})
	t.Logf("after the restart (%v after the kill), B's row arrived %v after it opened",
		restarted.Sub(killed).Round(time.Millisecond), time.Since(b.started).Round(time.Millisecond))
	// Rows are uploaded in order: everything the restarted client reported
	// before B is in rows.
	// A was reported before the kill. Its row left the plugin less than
	// the state's lag (30 s) before it, so the restarted plugin cannot
	// trust it reached the server and may report it once more, marked
	// Offline; never as a new live connection.
	var live, offline int
	for _, row := range filterRows(rows, a.pid, target.port, "added") {
		if row["Offline"] == true {
			offline++
		} else {
			live++
		}
	}
	if live != 1 || offline > 1 {
		t.Errorf("connection A (pid %d), open across the restart: %d live and %d offline added rows, want 1 and at most 1",
			a.pid, live, offline)
	}
	if n := len(filterRows(rows, b.pid, target.port, "added")); n != 1 {
		t.Errorf("connection B (pid %d): %d added rows, want 1", b.pid, n)
	}
	// The client artifact keeps netstat_watch's state file (KeepState):
	// the restarted plugin compares its first snapshot with what it had
	// reported, so C, opened while the client was down, is reported once,
	// marked Offline.
	if cs := filterRows(rows, c.pid, target.port, "added"); len(cs) != 1 {
		t.Errorf("connection C (pid %d), opened while the client was down: %d added rows, want 1", c.pid, len(cs))
	} else if cs[0]["Offline"] != true {
		t.Errorf("connection C's added row: Offline %v, want true", cs[0]["Offline"])
	}
	// The rows of the last moments before the kill were still in the
	// client's buffer (sent at most every event_max_wait, 1 s here, plus
	// jitter): the buffer does not survive the process. The state file
	// was saved before them, so at restart the plugin reports again the
	// connections still in the table (their TIME_WAIT remnants): none is
	// lost, and those whose rows had left before the kill show twice
	// (at least once across a SIGKILL).
	burstPorts := map[int]int{}
	for _, row := range rows {
		raddr, _ := row["Raddr"].(map[string]any)
		laddr, _ := row["Laddr"].(map[string]any)
		if row["Diff"] == "added" && num(raddr["Port"]) == burst.port {
			burstPorts[num(laddr["Port"])]++
		}
	}
	twice := 0
	for _, k := range burstPorts {
		if k > 1 {
			twice++
		}
	}
	t.Logf("SIGKILL: %d connections made in the 3 s before the kill; %d of them stored, %d of those twice",
		len(burstMade), len(burstPorts), twice)
	var lost []int
	for _, port := range burstMade {
		if burstPorts[port] == 0 {
			lost = append(lost, port)
		}
	}
	if len(lost) > 0 {
		t.Errorf("SIGKILL: %d of the %d connections made in the 3 s before the kill were never stored (local ports %v)",
			len(lost), len(burstMade), lost)
	}
	if errs := logErrors(client.LogPath, "===== netwatch deploy: starting"); len(errs) > 0 {
		t.Errorf("restarted client logged errors:\n%s", strings.Join(errs, "\n"))
	}

	closeA()
	closeC()
	r.checkNothingLeft()
	t.Logf("client restart test done in %v", time.Since(testStart).Round(time.Millisecond))
}

// TestServerRestart stops the server while a client keeps reporting,
// makes connections while it is down, and starts it again on the same
// folder and ports: the client's buffered rows reach the server's
// storage, and the server alert artifact, restarted with the server,
// alerts on each of them once.
func TestServerRestart(t *testing.T) {
	binary, exe, processName := needBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	testStart := time.Now()
	const n = 5

	target := listen(t, "127.0.0.1") // alerts
	canary := listen(t, "127.0.0.1") // alerts: readiness probe
	stream := listen(t, "127.0.0.1") // no alert: other events
	hook, err := webhook.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hook.Close() })

	r := newRig(ctx, t, binary, exe)
	_, id := r.startMonitored("c1")
	// DedupSeconds and RateLimit 0: every matching connection alerts once.
	if err := r.d.SetServerMonitoring(ctx, deploy.ServerArtifact, map[string]string{
		"WebHook":          hook.URL(),
		"WebHookFormat":    "json",
		"RemotePortRegex":  fmt.Sprintf("^(%d|%d)$", target.port, canary.port),
		"ProcessNameRegex": "^" + regexp.QuoteMeta(processName) + "$",
		"DedupSeconds":     "0",
		"RateLimit":        "0",
	}); err != nil {
		t.Fatal(err)
	}
	waitLive(ctx, t, r.children, hook, canary.addr(), func(a webhook.Alert) bool {
		return a.Raddr.Port == canary.port
	})
	t.Logf("client %s monitoring, alert path live after %v", id, time.Since(testStart).Round(time.Millisecond))

	// The client keeps producing events throughout.
	stop := make(chan struct{})
	streamed := dialLoop(stream.addr(), 100*time.Millisecond, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()

	ports := r.d.Ports
	stopStart := time.Now()
	r.d.Stop()
	down := time.Now()
	t.Logf("server stopped in %v", down.Sub(stopStart).Round(time.Millisecond))

	// N connections while the server is down, each long enough (0.5 s)
	// for a 0.1 s period to see it with its process.
	var conns []conn
	for i := 0; i < n; i++ {
		conns = append(conns, r.children.connect(ctx, target.addr(), 500*time.Millisecond))
	}
	time.Sleep(time.Second)

	upIn := r.startServer(ports)
	up := time.Now()
	t.Logf("server down %v; restarted on the same ports in %v", up.Sub(down).Round(time.Millisecond), upIn.Round(time.Millisecond))

	// 1. Every row the client buffered reaches the server's storage.
	rows := waitRows(ctx, t, r.d, id, stopStart, func(rows []deploy.Row) bool {
		for _, c := range conns {
			if len(filterRows(rows, c.pid, target.port, "added")) == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("all %d added rows stored %v after the restart", n, time.Since(up).Round(time.Millisecond))
	for _, c := range conns {
		if k := len(filterRows(rows, c.pid, target.port, "added")); k != 1 {
			t.Errorf("pid %d: %d added rows, want 1", c.pid, k)
		}
	}

	// 2. One webhook each. The marker, made once the rows are stored,
	// alerts after them (a client's events are handled in order).
	marker := r.children.connect(ctx, target.addr(), 300*time.Millisecond)
	if err := within(ctx, 45*time.Second, func(ctx context.Context) error {
		_, err := hook.Wait(ctx, func(a webhook.Alert) bool { return a.Process.Pid == marker.pid })
		return err
	}); err != nil {
		t.Fatalf("no webhook for the marker connection made after the restart (pid %d): %v", marker.pid, err)
	}
	close(stop)
	t.Logf("%d stream connections made during the test", len(streamed()))
	lost := 0
	for _, c := range conns {
		got := hook.Matching(func(a webhook.Alert) bool { return a.Process.Pid == c.pid })
		switch len(got) {
		case 1:
			t.Logf("pid %d: webhook %v after the restart", c.pid, got[0].Received.Sub(up).Round(time.Millisecond))
		case 0:
			lost++
		default:
			t.Errorf("pid %d: %d webhooks, want 1: %s", c.pid, len(got), summarize(got))
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d connections made while the server was down never alerted", lost, n)
	}
	t.Logf("server log around the restart:\n%s", grepLog(r.d.LogPath, "netwatch deploy|Server Monitoring|server_monitoring|Frontend|Starting|TrackNetwork", 40))

	r.checkNothingLeft()
	t.Logf("server restart test done in %v", time.Since(testStart).Round(time.Millisecond))
}
