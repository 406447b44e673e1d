package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/tools/deploy"
	"github.com/netwatch-dfir/netwatch/tools/webhook"
)

// The token in the webhook URL: it must not appear anywhere the
// deployment writes (datastore, results, logs) after the run.
const outageToken = "NETWATCH-E2E-SECRET-7c1f0d"

// TestWebhookOutage runs the alert path through a receiver that answers
// 500, then is down, then is slow, and counts what arrives: every alert,
// once (at least once for the slow receiver, whose late answers make the
// sender try again), in the order the connections were made. The webhook
// URL, token included, is a managed secret; afterwards no file of the
// deployment holds the token.
func TestWebhookOutage(t *testing.T) {
	binary, exe, _ := needBinary(t)
	needNetwatchServer(t) // the queue is netwatch_webhook()'s
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	alertLn := listen(t, "127.0.0.1")
	canaryLn := listen(t, "127.0.0.1")
	g := startGUI(ctx, t, binary, exe)
	d, client, hook, children, dir := g.d, g.client, g.hook, g.children, g.dir

	// The URL goes into a managed secret from a file, so that it is not in
	// any query text or parameter either (the GUI's secret dialog does
	// the same). Server event artifacts run as VelociraptorServer.
	urlFile := filepath.Join(t.TempDir(), "url")
	hookURL := hook.URL() + "/services/T0E2E/B0E2E/" + outageToken
	if err := os.WriteFile(urlFile, []byte(hookURL), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Query(ctx, `
SELECT secret_add(name="netwatch-e2e", type="HTTP Secrets",
                  secret=dict(url=read_file(filename=UrlFile))),
       secret_modify(name="netwatch-e2e", type="HTTP Secrets",
                     add_users=["VelociraptorServer"])
FROM scope()`, map[string]string{"UrlFile": urlFile}); err != nil {
		t.Fatal(err)
	}

	if err := d.SetClientMonitoring(ctx, deploy.ClientArtifact, clientParams); err != nil {
		t.Fatal(err)
	}
	serverParams := map[string]string{
		"WebHookSecret":     "netwatch-e2e",
		"WebHookFormat":     "json",
		"RemotePortRegex":   fmt.Sprintf("^(%d|%d)$", alertLn.port, canaryLn.port),
		"DedupSeconds":      "0",
		"RateLimit":         "0",
		"WebHookRetryDelay": "0.5",
		"WebHookTimeout":    "1",
	}
	if err := d.SetServerMonitoring(ctx, serverArtifact, serverParams); err != nil {
		t.Fatal(err)
	}
	waitLive(ctx, t, children, hook, canaryLn.addr(), func(a webhook.Alert) bool {
		return a.Raddr.Port == canaryLn.port
	})
	t.Logf("alert path live after %v", time.Since(start).Round(time.Millisecond))

	// connectN makes n connections to the alert port, one after the other.
	connectN := func(n int) []conn {
		var out []conn
		for i := 0; i < n; i++ {
			out = append(out, children.connect(ctx, alertLn.addr(), 300*time.Millisecond))
		}
		return out
	}
	// deliveries waits until every connection of cs has alerted and
	// returns, per connection, how many webhooks it got, and the order of
	// the first ones.
	deliveries := func(phase string, cs []conn) (counts map[int]int, order []int) {
		t.Helper()
		want := map[int]bool{}
		for _, c := range cs {
			want[c.pid] = true
		}
		ours := func(a webhook.Alert) bool { return want[a.Process.Pid] && a.Raddr.Port == alertLn.port }
		deadline := time.Now().Add(60 * time.Second)
		for {
			counts = map[int]int{}
			order = nil
			for _, a := range hook.Matching(ours) {
				if counts[a.Process.Pid] == 0 {
					order = append(order, a.Process.Pid)
				}
				counts[a.Process.Pid]++
			}
			if len(counts) == len(cs) {
				return counts, order
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d connections alerted after 60 s; received: %s",
					phase, len(counts), len(cs), summarize(hook.Alerts()))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	pids := func(cs []conn) []int {
		var out []int
		for _, c := range cs {
			out = append(out, c.pid)
		}
		return out
	}
	checkInOrder := func(phase string, cs []conn, order []int) {
		t.Helper()
		if fmt.Sprint(order) != fmt.Sprint(pids(cs)) {
			t.Errorf("%s: alerts arrived in the order %v, want the connections' order %v", phase, order, pids(cs))
		}
	}
	var all []conn

	// ---- 1. the receiver answers 500 -------------------------------------
	hook.SetFault(http.StatusInternalServerError, 0)
	failing := connectN(3)
	all = append(all, failing...)
	waitUntil(ctx, t, "retries against the failing receiver", func() bool { return hook.Refused() >= 3 })
	hook.SetFault(0, 0)
	counts, order := deliveries("HTTP 500", failing)
	for _, c := range failing {
		if counts[c.pid] != 1 {
			t.Errorf("HTTP 500: connection pid %d alerted %d times, want 1", c.pid, counts[c.pid])
		}
	}
	checkInOrder("HTTP 500", failing, order)
	t.Logf("receiver answering 500: %d requests refused, then all %d alerts delivered once, in order", hook.Refused(), len(failing))

	// ---- 2. the receiver is down -----------------------------------------
	if err := hook.Close(); err != nil {
		t.Fatal(err)
	}
	down := connectN(5)
	all = append(all, down...)
	time.Sleep(4 * time.Second) // several failed attempts, doubling delays
	if err := hook.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	counts, order = deliveries("receiver down", down)
	for _, c := range down {
		if counts[c.pid] != 1 {
			t.Errorf("receiver down: connection pid %d alerted %d times, want 1", c.pid, counts[c.pid])
		}
	}
	checkInOrder("receiver down", down, order)
	t.Logf("receiver down for 4 s: all %d alerts delivered once, in order, %v after it came back",
		len(down), time.Since(back).Round(100*time.Millisecond))

	// ---- 3. the receiver is slow (3 s, the artifact waits 1 s) ------------
	hook.SetFault(0, 3*time.Second)
	slow := connectN(2)
	all = append(all, slow...)
	time.Sleep(3 * time.Second)
	hook.SetFault(0, 0)
	counts, order = deliveries("slow receiver", slow)
	dup := 0
	for _, c := range slow {
		dup += counts[c.pid] - 1
	}
	checkInOrder("slow receiver", slow, order)
	t.Logf("slow receiver: all %d alerts delivered, %d more than once (an answer later than WebHookTimeout counts as a failure)", len(slow), dup)

	// ---- 4. the alert query restarts while alerts are queued ---------------
	// Changing the server monitoring table restarts the alert query (as a
	// server restart does): its queue of undelivered webhooks goes with
	// it, and events arriving before the new query subscribes are not
	// seen live. The new query replays what was stored since its cursor.
	if err := hook.Close(); err != nil {
		t.Fatal(err)
	}
	queued := connectN(2)
	time.Sleep(3 * time.Second)               // processed and queued; the cursor written
	serverParams["WebHookRetryDelay"] = "0.6" // a change: the query restarts
	if err := d.SetServerMonitoring(ctx, serverArtifact, serverParams); err != nil {
		t.Fatal(err)
	}
	gap := connectN(1) // while the new query starts
	queued = append(queued, gap...)
	all = append(all, queued...)
	time.Sleep(4 * time.Second)
	if err := hook.Restart(); err != nil {
		t.Fatal(err)
	}
	back = time.Now()
	counts, _ = deliveries("alert query restarted", queued)
	t.Logf("alert query restarted with 2 alerts queued and 1 connection during its start: all %d alerted %v after the receiver came back (per connection: %v)",
		len(queued), time.Since(back).Round(100*time.Millisecond), counts)
	logs, _ := filepath.Glob(filepath.Join(dir, "server_artifact_logs", serverArtifact, "*.json"))
	line := ""
	for _, l := range logs {
		if m := grepLog(l, "caught up on", 1); m != "" {
			line = m
		}
	}
	if line == "" {
		t.Errorf("the restarted alert query did not log its catch-up")
	} else {
		t.Logf("%s", line)
	}

	// ---- 5. nothing lost in Velociraptor's storage -------------------------
	from := all[0].started.Add(-2 * time.Second)
	waitRows(ctx, t, d, client.ID, from, func(rows []deploy.Row) bool {
		for _, c := range all {
			if len(filterRows(rows, c.pid, alertLn.port, "added")) != 1 {
				return false
			}
		}
		return true
	})
	results, err := d.Query(ctx, `
SELECT Pid, Webhook, WebhookResponse FROM source(artifact=NetwatchArtifact,
    start_time=int(int=NetwatchFrom), end_time=now() + 60)
WHERE Type = "connection"`, map[string]string{"NetwatchArtifact": serverArtifact,
		"NetwatchFrom": fmt.Sprint(from.Unix())})
	if err != nil {
		t.Fatal(err)
	}
	statuses := map[int]string{}
	for _, r := range results {
		statuses[num(r["Pid"])] = fmt.Sprint(r["Webhook"])
	}
	for _, c := range down {
		if !strings.HasPrefix(statuses[c.pid], "queued") {
			t.Errorf("server artifact result for pid %d (receiver down): Webhook %q, want queued", c.pid, statuses[c.pid])
		}
	}
	if s := statuses[down[0].pid]; !strings.Contains(s, "connection refused") {
		t.Errorf("the first alert of the outage should say why it was queued: %q", s)
	}

	// ---- 6. permissions: a reader may neither watch sockets nor post -----
	checkReaderRefused(ctx, t, d, hook)

	// ---- 7. the token is nowhere -----------------------------------------
	g.stop()
	var files int
	var leaks []string
	filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		files++
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(outageToken)) {
			leaks = append(leaks, path)
		}
		return nil
	})
	sort.Strings(leaks)
	if len(leaks) > 0 {
		t.Errorf("the webhook token is in %d files of the deployment: %s", len(leaks), strings.Join(leaks, ", "))
	}
	t.Logf("token absent from all %d files of the datastore and logs", files)
	checkNothingLeft(t, []int{d.Pid()}, dir, d.Ports, children)
	t.Logf("outage test done in %v", time.Since(start).Round(time.Millisecond))
}

// checkReaderRefused runs netstat_watch() and netwatch_webhook() as a
// user with the reader role (query(runas=...), as the GUI's notebooks
// would for that user): both are refused, naming the permission, and no
// request reaches the receiver.
func checkReaderRefused(ctx context.Context, t *testing.T, d *deploy.Deployment, hook *webhook.Receiver) {
	t.Helper()
	if _, err := d.Query(ctx, `SELECT user_create(user="netwatch-reader", roles=["reader"]) FROM scope()`, nil); err != nil {
		t.Fatal(err)
	}
	before := len(hook.Alerts())
	for _, tc := range []struct{ vql, perm string }{
		{`SELECT * FROM netstat_watch(period=0.1) LIMIT 1`, "MACHINE_STATE"},
		{`SELECT netwatch_webhook(url=HookURL, data='{"text": "reader"}') FROM scope()`, "NETWORK"},
	} {
		_, logs, err := d.QueryRaw(ctx, `SELECT * FROM query(query=Q, runas="netwatch-reader",
		    env=dict(HookURL=HookURL))`, map[string]string{"Q": tc.vql, "HookURL": hook.URL()}, "jsonl")
		var qe *deploy.QueryError
		refused := errors.As(err, &qe) && strings.Contains(strings.Join(qe.Log, " "), tc.perm)
		if !refused {
			t.Errorf("%s as a reader: want a permission error naming %s; got err %v, log %q", tc.vql, tc.perm, err, logs)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(hook.Alerts()) - before; n != 0 {
		t.Errorf("%d webhooks arrived from a reader's query", n)
	}
}

// waitUntil polls cond for up to 30 s.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitUntilFor(ctx, t, what, 30*time.Second, cond)
}

// waitUntilFor polls cond for up to d.
func waitUntilFor(ctx context.Context, t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out (%v) waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
