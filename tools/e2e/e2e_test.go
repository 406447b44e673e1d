// Package e2e is the end-to-end test: the custom binary as a real
// deployment (server + client, `velociraptor gui` mode) in a temporary
// folder on free loopback ports, monitoring configured through the API, a
// real webhook receiver, and real connections from child processes.
//
// It needs the built binary: `make test` sets NETWATCH_BINARY; by hand,
//
//	NETWATCH_BINARY=$PWD/build/velociraptor go test -v ./tools/e2e
package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/tools/deploy"
	"github.com/netwatch-dfir/netwatch/tools/webhook"
)

// The alert and the IOC the test configures.
const (
	iocCIDR        = "127.0.0.0/31" // holds 127.0.0.1, not 127.0.0.3
	iocDescription = "netwatch e2e: loopback stands in for a C2 server"
)

// serverArtifact is the alert artifact under test.
const serverArtifact = deploy.ServerArtifact

func TestEndToEnd(t *testing.T) {
	binary, exe, processName := needBinary(t)
	testStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	alertLn := listen(t, "127.0.0.1")    // the port the alert filters for
	canaryLn := listen(t, "127.0.0.1")   // also in the filter: readiness probe
	excludedLn := listen(t, "127.0.0.1") // not in the filter
	iocLn := listen(t, "127.0.0.1")      // IOC phase: inside the IOC CIDR
	outsideLn := listen(t, "127.0.0.3")  // IOC phase: outside it

	g := startGUI(ctx, t, binary, exe)
	d, client, hook, children, dir := g.d, g.client, g.hook, g.children, g.dir
	hook.OnAlert = func(a webhook.Alert) { t.Logf("webhook: %s", strings.TrimSpace(a.Text)) }

	// ---- monitoring, configured through the API ------------------------
	if err := d.SetClientMonitoring(ctx, deploy.ClientArtifact, clientParams); err != nil {
		t.Fatal(err)
	}
	// DedupSeconds and RateLimit 0: every matching connection alerts once,
	// so "exactly one webhook" is the tracker's doing, not the dedup's.
	portParams := map[string]string{
		"WebHook":         hook.URL(),
		"WebHookFormat":   "json",
		"RemotePortRegex": fmt.Sprintf("^(%d|%d)$", alertLn.port, canaryLn.port),
		"DedupSeconds":    "0",
		"RateLimit":       "0",
	}
	if err := d.SetServerMonitoring(ctx, serverArtifact, portParams); err != nil {
		t.Fatal(err)
	}

	// The client picks up its new event table and the server starts the
	// alert query asynchronously: probe with canary connections until one
	// alerts, which proves the whole path live.
	canary := waitLive(ctx, t, children, hook, canaryLn.addr(), func(a webhook.Alert) bool {
		return a.Raddr.Port == canaryLn.port
	})
	t.Logf("alert path live after %v (canary pid %d)", time.Since(testStart).Round(time.Millisecond), canary.pid)

	// ---- 1. a connection to the filtered port: exactly one webhook --------
	first := children.connect(ctx, alertLn.addr(), 500*time.Millisecond)
	t.Logf("first connection: pid %d, 127.0.0.1:%d -> %s", first.pid, first.localPort, first.raddr)
	var got webhook.Alert
	if err := within(ctx, 45*time.Second, func(ctx context.Context) error {
		var err error
		got, err = hook.Wait(ctx, func(a webhook.Alert) bool {
			return a.Raddr.Port == alertLn.port && a.Process.Pid == first.pid
		})
		return err
	}); err != nil {
		t.Fatalf("no webhook for the connection to port %d (pid %d): %v; received: %s",
			alertLn.port, first.pid, err, summarize(hook.Alerts()))
	}
	t.Logf("webhook for the first connection %v after it opened", got.Received.Sub(first.started).Round(time.Millisecond))
	checkAlert(t, got, client, first, processName)

	// ---- 2. a connection to an excluded port: no webhook ---------------
	// Then a marker connection to the filtered port: the server handles a
	// client's events in order, so once the marker's webhook is here, the
	// excluded connection's would be too.
	excluded := children.connect(ctx, excludedLn.addr(), 500*time.Millisecond)
	marker := children.connect(ctx, alertLn.addr(), 300*time.Millisecond)
	if err := within(ctx, 45*time.Second, func(ctx context.Context) error {
		_, err := hook.Wait(ctx, func(a webhook.Alert) bool { return a.Process.Pid == marker.pid })
		return err
	}); err != nil {
		t.Fatalf("no webhook for the marker connection (pid %d): %v", marker.pid, err)
	}
	if bad := hook.Matching(func(a webhook.Alert) bool {
		return a.Raddr.Port == excludedLn.port || a.Process.Pid == excluded.pid
	}); len(bad) > 0 {
		t.Errorf("connection to the excluded port %d alerted: %s", excludedLn.port, summarize(bad))
	}
	if n := hook.Matching(func(a webhook.Alert) bool { return a.Process.Pid == first.pid }); len(n) != 1 {
		t.Errorf("first connection: %d webhooks, want exactly 1: %s", len(n), summarize(n))
	}

	// ---- 3. the client's monitoring results hold both rows ---------------
	from, to := first.started.Add(-2*time.Second), time.Now().Add(2*time.Second)
	rows := waitRows(ctx, t, d, client.ID, from, func(rows []deploy.Row) bool {
		return len(filterRows(rows, first.pid, alertLn.port, "added")) > 0 &&
			len(filterRows(rows, first.pid, alertLn.port, "removed")) > 0 &&
			len(filterRows(rows, excluded.pid, excludedLn.port, "added")) > 0
	})
	checkRows(t, rows, first, alertLn.port, processName)

	// ---- 4. threat hunting: the raw events of a time range, as CSV and JSON
	to = time.Now().Add(time.Second)
	checkHuntDownloads(ctx, t, d, client.ID, from, to, first, alertLn.port)

	// ---- 5. an IOC list alert --------------------------------------------
	iocParams := map[string]string{
		"WebHook":       hook.URL(),
		"WebHookFormat": "json",
		"IOCs":          fmt.Sprintf("Network,Description\n%s,%s\n", iocCIDR, iocDescription),
		// Only the test's children: other loopback traffic on this host
		// (e.g. other test packages running now) must not flood it.
		"ProcessNameRegex": "^" + strings.ReplaceAll(processName, ".", `\.`) + "$",
		"DedupSeconds":     "0",
		"RateLimit":        "0",
	}
	if err := d.SetServerMonitoring(ctx, serverArtifact, iocParams); err != nil {
		t.Fatal(err)
	}
	iocConn := waitLive(ctx, t, children, hook, iocLn.addr(), func(a webhook.Alert) bool {
		return a.Raddr.Port == iocLn.port && a.IOC != nil
	})
	iocAlert := hook.Matching(func(a webhook.Alert) bool { return a.Process.Pid == iocConn.pid })
	if len(iocAlert) != 1 {
		t.Fatalf("IOC connection pid %d: %d webhooks, want 1", iocConn.pid, len(iocAlert))
	}
	a := iocAlert[0]
	if a.IOC.Network != iocCIDR || a.IOC.Description != iocDescription {
		t.Errorf("IOC alert names IOC %+v, want %s %q", *a.IOC, iocCIDR, iocDescription)
	}
	if !strings.Contains(a.Message, iocDescription) {
		t.Errorf("IOC alert message %q lacks the IOC's description", a.Message)
	}
	if a.Fqdn != client.Fqdn || a.Process.Name != processName {
		t.Errorf("IOC alert: Fqdn %q, process %q; want %q, %q", a.Fqdn, a.Process.Name, client.Fqdn, processName)
	}
	// A loopback address outside the CIDR does not alert.
	outside := children.connect(ctx, outsideLn.addr(), 300*time.Millisecond)
	iocMarker := children.connect(ctx, iocLn.addr(), 300*time.Millisecond)
	if err := within(ctx, 45*time.Second, func(ctx context.Context) error {
		_, err := hook.Wait(ctx, func(a webhook.Alert) bool { return a.Process.Pid == iocMarker.pid })
		return err
	}); err != nil {
		t.Fatalf("no webhook for the IOC marker connection (pid %d): %v", iocMarker.pid, err)
	}
	if bad := hook.Matching(func(a webhook.Alert) bool {
		return a.Process.Pid == outside.pid || a.Raddr.IP == "127.0.0.3"
	}); len(bad) > 0 {
		t.Errorf("connection to 127.0.0.3 (outside %s) alerted: %s", iocCIDR, summarize(bad))
	}

	// ---- 6. everything stopped, nothing left behind ----------------------
	pids := g.pids()
	g.stop()
	checkNothingLeft(t, pids, dir, d.Ports, children)
	t.Logf("end-to-end test done in %v", time.Since(testStart).Round(time.Millisecond))
}

func checkAlert(t *testing.T, a webhook.Alert, client deploy.Client, c conn, processName string) {
	t.Helper()
	if a.Artifact != serverArtifact {
		t.Errorf("webhook Artifact %q, want %q", a.Artifact, serverArtifact)
	}
	if a.ClientId != client.ID {
		t.Errorf("webhook ClientId %q, want %q", a.ClientId, client.ID)
	}
	if a.Fqdn != client.Fqdn || a.Fqdn == "" {
		t.Errorf("webhook Fqdn %q, want the client's FQDN %q", a.Fqdn, client.Fqdn)
	}
	if a.Process.Pid != c.pid || a.Process.Name != processName {
		t.Errorf("webhook process %q pid %d, want %q pid %d", a.Process.Name, a.Process.Pid, processName, c.pid)
	}
	if _, port, _ := net.SplitHostPort(c.raddr); strconv.Itoa(a.Raddr.Port) != port {
		t.Errorf("webhook remote port %d, want %s", a.Raddr.Port, port)
	}
	if a.Laddr.Port != c.localPort {
		t.Errorf("webhook local port %d, want the child's %d", a.Laddr.Port, c.localPort)
	}
	if a.Diff != "added" || a.Direction != "outbound" {
		t.Errorf("webhook Diff %q Direction %q, want added outbound", a.Diff, a.Direction)
	}
	for _, want := range []string{processName, strconv.Itoa(a.Raddr.Port), client.Fqdn} {
		if !strings.Contains(a.Message, want) {
			t.Errorf("webhook message %q does not name %q", a.Message, want)
		}
	}
}

func checkRows(t *testing.T, rows []deploy.Row, c conn, port int, processName string) {
	t.Helper()
	added := filterRows(rows, c.pid, port, "added")
	removed := filterRows(rows, c.pid, port, "removed")
	if len(added) != 1 || len(removed) != 1 {
		t.Fatalf("monitoring rows of pid %d -> port %d: %d added, %d removed; want 1 and 1",
			c.pid, port, len(added), len(removed))
	}
	for _, r := range []deploy.Row{added[0], removed[0]} {
		info, _ := r["ProcInfo"].(map[string]any)
		data, _ := info["Data"].(map[string]any)
		if num(data["Pid"]) != c.pid || data["Name"] != processName {
			t.Errorf("%s row ProcInfo %v, want pid %d name %q", r["Diff"], info, c.pid, processName)
		}
		laddr, _ := r["Laddr"].(map[string]any)
		if num(laddr["Port"]) != c.localPort {
			t.Errorf("%s row Laddr %v, want port %d", r["Diff"], laddr, c.localPort)
		}
	}
	if d, ok := removed[0]["Duration"].(float64); !ok || d < 0.3 || d > 5 {
		t.Errorf("removed row Duration %v, want about 0.5 s", removed[0]["Duration"])
	}
	if added[0]["ConnId"] != removed[0]["ConnId"] {
		t.Errorf("added ConnId %v != removed ConnId %v", added[0]["ConnId"], removed[0]["ConnId"])
	}
}

// checkHuntDownloads is the threat-hunting path: the client artifact ran
// for a while; the raw events of a time range are downloaded as CSV and as
// JSON the way the README's GUI steps do it (a notebook cell with
// source(start_time, end_time), then the table's download buttons), here
// through the API and the GUI's download endpoint.
func checkHuntDownloads(ctx context.Context, t *testing.T, d *deploy.Deployment, clientID string,
	from, to time.Time, c conn, port int) {
	t.Helper()
	vql := func(from, to time.Time) string {
		return fmt.Sprintf(`SELECT * FROM source(client_id=%q, artifact=%q, start_time=%q, end_time=%q)`,
			clientID, deploy.ClientArtifact, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	}
	table, err := d.Notebook(ctx, "netwatch e2e: threat hunting", vql(from, to))
	if err != nil {
		t.Fatalf("notebook: %v", err)
	}

	// CSV. Velociraptor's CSV writer starts a new header line when the
	// columns change, so records are read against the latest header.
	out, err := table.Download(ctx, "csv")
	if err != nil {
		t.Fatalf("CSV download: %v", err)
	}
	r := csv.NewReader(bytes.NewReader(out))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) < 2 {
		t.Fatalf("CSV download: %d records, %v:\n%.500s", len(recs), err, out)
	}
	var col map[string]int
	headers, csvRows := 0, 0
	seen := map[string]bool{}
	portRe := regexp.MustCompile(fmt.Sprintf(`"Port":\s*%d\b`, port))
	for _, rec := range recs {
		if len(rec) > 0 && rec[0] == "Diff" {
			col = map[string]int{}
			for i, h := range rec {
				col[h] = i
			}
			headers++
			continue
		}
		if col == nil || len(rec) != len(col) {
			t.Fatalf("CSV download: record %q does not match header %v", rec, col)
		}
		csvRows++
		if rec[col["Pid"]] == strconv.Itoa(c.pid) && portRe.MatchString(rec[col["Raddr"]]) {
			seen[rec[col["Diff"]]] = true
		}
	}
	for _, h := range []string{"Diff", "Timestamp", "Pid", "Laddr", "Raddr", "ProcInfo", "Direction"} {
		if _, ok := col[h]; !ok {
			t.Fatalf("CSV download lacks column %s: %v", h, col)
		}
	}
	if !seen["added"] || !seen["removed"] {
		t.Errorf("CSV download of %v..%v lacks the connection's rows (seen %v):\n%.1000s", from, to, seen, out)
	}

	// JSON: one object per line.
	out, err = table.Download(ctx, "json")
	if err != nil {
		t.Fatalf("JSON download: %v", err)
	}
	rows := parseJSONL(t, out)
	if len(filterRows(rows, c.pid, port, "added")) != 1 || len(filterRows(rows, c.pid, port, "removed")) != 1 {
		t.Errorf("JSON download of %v..%v lacks the connection's rows (%d rows)", from, to, len(rows))
	}
	if len(rows) != csvRows {
		t.Errorf("JSON download has %d rows, CSV %d", len(rows), csvRows)
	}

	// A range that ends before the connection was made holds none of it.
	early, err := d.Notebook(ctx, "netwatch e2e: earlier range", vql(from.Add(-time.Hour), c.started.Add(-2*time.Second)))
	if err != nil {
		t.Fatalf("notebook: %v", err)
	}
	out, err = early.Download(ctx, "json")
	if err != nil {
		t.Fatalf("JSON download of an earlier range: %v", err)
	}
	for _, r := range parseJSONL(t, out) {
		if num(r["Pid"]) == c.pid {
			t.Errorf("a range ending before the connection holds its row: %v", r)
		}
	}
	t.Logf("threat hunting: notebook %s: %d CSV rows (%d header lines), %d JSON rows for %s..%s",
		table.NotebookID, csvRows, headers, len(rows), from.Format(time.TimeOnly), to.Format(time.TimeOnly))
}

func parseJSONL(t *testing.T, b []byte) []deploy.Row {
	t.Helper()
	var rows []deploy.Row
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var r deploy.Row
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("JSON download: %v", err)
		}
		rows = append(rows, r)
	}
	return rows
}
