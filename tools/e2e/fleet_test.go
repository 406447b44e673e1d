package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/tools/deploy"
	"github.com/netwatch-dfir/netwatch/tools/webhook"
)

// TestAlertingLeavesClientsAlone: while 100 alerting connections arrive,
// the server alert artifact writes nothing clients depend on: the
// server's client_event_update counter (client event table pushes, one
// per client per table change) does not move. Its restart cursor is in
// its own results (checkpoint rows); after a server restart it catches
// up from there: connections made while the server was down alert once,
// and the 100 already alerted do not alert again.
func TestAlertingLeavesClientsAlone(t *testing.T) {
	binary, exe, processName := needBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	testStart := time.Now()
	const n, down = 100, 5

	target := listen(t, "127.0.0.1")
	canary := listen(t, "127.0.0.1")
	hook, err := webhook.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hook.Close() })

	r := newRig(ctx, t, binary, exe)
	_, id := r.startMonitored("c1")
	// Rules (not the older filters) pick the connections; every one
	// alerts once: no dedup, no caps. The target rule goes by port only,
	// so that a connection seen only through its ownerless TIME_WAIT
	// remnant (a loaded machine) alerts too: alerts are matched to
	// connections by their local port.
	if err := r.d.SetServerMonitoring(ctx, deploy.ServerArtifact, map[string]string{
		"WebHook":       hook.URL(),
		"WebHookFormat": "json",
		"Rules": fmt.Sprintf("Name,Severity,ProcessNameRegex,RemotePort\n"+
			"e2e target,high,,%d\ne2e canary,low,^%s$,%d\n",
			target.port, regexp.QuoteMeta(processName), canary.port),
		"DedupSeconds":    "0",
		"RateLimit":       "0",
		"GlobalRateLimit": "0",
	}); err != nil {
		t.Fatal(err)
	}
	waitLive(ctx, t, r.children, hook, canary.addr(), func(a webhook.Alert) bool {
		return a.Raddr.Port == canary.port && a.Rule == "e2e canary"
	})
	t.Logf("client %s monitoring, alert path live after %v", id, time.Since(testStart).Round(time.Millisecond))

	// The table pushes of the set-up (the client's own table) are done
	// once the counter holds still for a few seconds.
	before := quietCounter(ctx, t, r.d, "client_event_update")

	var conns []conn
	for i := 0; i < n; i++ {
		conns = append(conns, r.children.connect(ctx, target.addr(), 300*time.Millisecond))
	}
	alerted := func(c conn) []webhook.Alert {
		return hook.Matching(func(a webhook.Alert) bool {
			return a.Laddr.Port == c.localPort && a.Raddr.Port == target.port
		})
	}
	missing := func(cs []conn) int {
		k := 0
		for _, c := range cs {
			if len(alerted(c)) == 0 {
				k++
			}
		}
		return k
	}
	waitUntilFor(ctx, t, fmt.Sprintf("a webhook for each of %d connections", n), 3*time.Minute, func() bool {
		return missing(conns) == 0
	})
	t.Logf("%d alerts delivered %v after the first connection", n, time.Since(conns[0].started).Round(time.Millisecond))
	for _, c := range conns {
		if got := alerted(c); len(got) != 1 {
			t.Errorf("local port %d: %d webhooks, want 1: %s", c.localPort, len(got), summarize(got))
		} else if got[0].Rule != "e2e target" || got[0].Severity != "high" {
			t.Errorf("pid %d: rule %q severity %q, want the rule that matched", c.pid, got[0].Rule, got[0].Severity)
		}
	}

	// Two checkpoint periods, so that the cursor is written meanwhile.
	time.Sleep(22 * time.Second)
	after := counter(ctx, t, r.d, "client_event_update")
	t.Logf("client_event_update: %v before, %v after %d alerts and %v", before, after, n,
		time.Since(conns[0].started).Round(time.Second))
	if after != before {
		t.Errorf("client_event_update moved from %v to %v while alerts flowed: the server artifact changed what clients see", before, after)
	}
	cps, err := r.d.Query(ctx, `SELECT Cursor FROM source(artifact="Server.Alerts.TrackNetworkConnections")
		WHERE Type = "checkpoint"`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) == 0 {
		t.Fatal("no checkpoint row in the server artifact's results")
	}
	t.Logf("%d checkpoint rows written", len(cps))

	// Restart: connections made while the server is down alert once; the
	// 100 (alerted more than a checkpoint period ago) do not alert again.
	ports := r.d.Ports
	r.d.Stop()
	var missed []conn
	for i := 0; i < down; i++ {
		missed = append(missed, r.children.connect(ctx, target.addr(), 500*time.Millisecond))
	}
	time.Sleep(time.Second)
	r.startServer(ports)
	up := time.Now()
	waitUntilFor(ctx, t, fmt.Sprintf("webhooks for the %d connections made while the server was down", down), 2*time.Minute, func() bool {
		return missing(missed) == 0
	})
	t.Logf("caught up %v after the restart", time.Since(up).Round(time.Millisecond))
	// The marker alerts after anything the catch-up could still send.
	marker := r.children.connect(ctx, target.addr(), 300*time.Millisecond)
	waitUntilFor(ctx, t, "the marker's webhook", time.Minute, func() bool { return len(alerted(marker)) > 0 })
	for _, c := range append(missed, conns...) {
		if got := alerted(c); len(got) != 1 {
			t.Errorf("local port %d: %d webhooks after the restart, want 1: %s", c.localPort, len(got), summarize(got))
		}
	}
	if after := counter(ctx, t, r.d, "client_event_update"); after > 1 {
		// A restarted server pushes the table once to each client that
		// reconnects; never once per alert.
		t.Errorf("client_event_update %v after the restart with 1 client, want at most 1", after)
	}
	t.Logf("server log:\n%s", grepLog(r.d.LogPath, "TrackNetwork", 10))
	r.checkNothingLeft()
}

// counter reads a counter of the server's monitoring port (Prometheus
// text format), summed over its labels.
func counter(ctx context.Context, t *testing.T, d *deploy.Deployment, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET",
		fmt.Sprintf("http://127.0.0.1:%d/metrics", d.Ports.Monitoring), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	total, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		total, found = total+v, true
	}
	if !found {
		// Registered on first use: not pushed yet.
		return 0
	}
	return total
}

// quietCounter waits until the counter holds still for 5 s and returns it.
func quietCounter(ctx context.Context, t *testing.T, d *deploy.Deployment, name string) float64 {
	t.Helper()
	last := counter(ctx, t, d, name)
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		time.Sleep(5 * time.Second)
		v := counter(ctx, t, d, name)
		if v == last {
			return v
		}
		last = v
	}
	t.Fatalf("%s kept moving for a minute before any alert", name)
	return 0
}
