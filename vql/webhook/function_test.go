package webhook

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Velocidex/ordereddict"
	"www.velocidex.com/golang/velociraptor/acls"
	"www.velocidex.com/golang/velociraptor/constants"
	"www.velocidex.com/golang/velociraptor/utils"
	vql_subsystem "www.velocidex.com/golang/velociraptor/vql"
	"www.velocidex.com/golang/velociraptor/vql/acl_managers"
	"www.velocidex.com/golang/vfilter"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
)

// run evaluates query with vars in a fresh root scope, closes the scope
// (which ends the function's senders) and returns the rows and the logs.
func run(t *testing.T, acl vql_subsystem.ACLManager, query string, vars *ordereddict.Dict) ([]*ordereddict.Dict, string) {
	t.Helper()
	logs := &testutil.QueryLog{}
	if vars == nil {
		vars = ordereddict.NewDict()
	}
	scope := vql_subsystem.MakeScope().AppendVars(vars.Set(vql_subsystem.ACL_MANAGER_VAR, acl))
	// As Velociraptor's query runner does: the function keeps its queues
	// in the root scope, which lives as long as the query.
	scope.AppendVars(ordereddict.NewDict().Set(constants.SCOPE_ROOT, scope))
	scope.SetLogger(logs.Logger())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vql, err := vfilter.Parse(query)
	if err != nil {
		t.Fatal(err)
	}
	var rows []*ordereddict.Dict
	for row := range vql.Eval(ctx, scope) {
		rows = append(rows, vfilter.RowToDict(ctx, scope, row))
	}
	scope.Close()
	return rows, logs.String()
}

func field(t *testing.T, row *ordereddict.Dict, col, name string) any {
	t.Helper()
	v, _ := row.Get(col)
	d, ok := v.(*ordereddict.Dict)
	if !ok {
		t.Fatalf("%s is %T %v, want a dict", col, v, v)
	}
	f, _ := d.Get(name)
	return f
}

func TestFunctionPostsWithHeaders(t *testing.T) {
	rcv := newReceiver(t)
	var got http.Header
	rcv.setAnswer(func(int) (int, string, time.Duration) { return 200, "ok", 0 })
	wrapped := rcv.srv.Handler
	rcv.srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rcv.mu.Lock()
		got = r.Header.Clone()
		rcv.mu.Unlock()
		wrapped.ServeHTTP(w, r)
	})
	rows, logs := run(t, acl_managers.NullACLManager{}, `
SELECT netwatch_webhook(url=URL, data='{"text": "hi"}', headers=dict(`+"`X-Test`"+`="1")) AS R
FROM scope()`, ordereddict.NewDict().Set("URL", "http://"+rcv.addr+"/hook"))
	if len(rows) != 1 {
		t.Fatalf("rows %v, logs %s", rows, logs)
	}
	if s := field(t, rows[0], "R", "Status"); s != "sent (HTTP 200)" {
		t.Errorf("Status %v; logs %s", s, logs)
	}
	if f := testutil.FailingLines(logs); len(f) > 0 {
		t.Errorf("a delivered alert would mark the query failed: %q", f)
	}
	if b := rcv.received(); len(b) != 1 || b[0] != `{"text": "hi"}` {
		t.Errorf("received %q", b)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if got.Get("Content-Type") != "application/json" || got.Get("X-Test") != "1" {
		t.Errorf("headers %v", got)
	}
}

func TestFunctionArgErrors(t *testing.T) {
	const token = "hooks/S3CRET-T0KEN"
	for _, tc := range []struct{ args, want string }{
		{`data="x"`, "url or secret is required"},
		{`url="ftp://example.invalid/` + token + `", data="x"`, "url must be an absolute http:// or https:// URL"},
		{`url="/` + token + `", data="x"`, "url must be an absolute http:// or https:// URL"},
		{`url="http://127.0.0.1:1/` + token + `"`, "data"},
		{`url="http://127.0.0.1:1/` + token + `", data="x", timeout=-1`, "timeout must be a number of seconds above 0"},
		{`url="http://127.0.0.1:1/` + token + `", data="x", retry_delay=0`, "retry_delay must be"},
		{`url="http://127.0.0.1:1/` + token + `", data="x", max_delay=1e9`, "max_delay must be"},
		{`url="http://127.0.0.1:1/` + token + `", data="x", queue_size=0`, "queue_size must be between 1 and 1000000, not 0"},
	} {
		rows, logs := run(t, acl_managers.NullACLManager{}, "SELECT netwatch_webhook("+tc.args+") AS R FROM scope()", nil)
		if len(rows) != 1 {
			t.Errorf("%s: %d rows", tc.args, len(rows))
			continue
		}
		if v, _ := rows[0].Get("R"); !utils.IsNil(v) {
			t.Errorf("%s: returned %v, want NULL", tc.args, v)
		}
		if !strings.Contains(logs, "netwatch_webhook: ") || !strings.Contains(logs, tc.want) {
			t.Errorf("%s: log %q, want %q", tc.args, logs, tc.want)
		}
		if f := testutil.FailingLines(logs); len(f) != 1 || !strings.Contains(f[0], tc.want) {
			t.Errorf("%s: Velociraptor would not mark the query failed: failing lines %q of %q", tc.args, f, logs)
		}
		if strings.Contains(logs, "S3CRET") {
			t.Errorf("%s: the URL is in the log: %q", tc.args, logs)
		}
	}
}

func TestFunctionNeedsNetworkPermission(t *testing.T) {
	rcv := newReceiver(t)
	rows, logs := run(t, acl_managers.NewRoleACLManager(nil, "reader"),
		`SELECT netwatch_webhook(url=URL, data="x") AS R FROM scope()`,
		ordereddict.NewDict().Set("URL", "http://"+rcv.addr+"/"))
	if len(rows) != 1 || !strings.Contains(logs, "PermissionDenied") || !strings.Contains(logs, acls.NETWORK.String()) {
		t.Errorf("rows %v, logs %q", rows, logs)
	}
	if len(testutil.FailingLines(logs)) == 0 {
		t.Errorf("Velociraptor would not mark the query failed: %q", logs)
	}
	if n := rcv.count(); n != 0 {
		t.Errorf("%d requests reached the receiver without the permission", n)
	}
}

// TLS: verified by default; skip_verify or the receiver's CA in root_ca
// let a self-signed receiver through.
func TestFunctionVerifiesTLS(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
	}))
	defer srv.Close()
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))

	vars := ordereddict.NewDict().Set("URL", srv.URL+"/hook").Set("CA", caPEM)
	rows, logs := run(t, acl_managers.NullACLManager{}, `
SELECT netwatch_webhook(url=URL, data="default", retry_delay=60) AS Default,
       netwatch_webhook(url=URL, data="skip", skip_verify=TRUE) AS Skip,
       netwatch_webhook(url=URL, data="ca", root_ca=CA) AS CA
FROM scope()`, vars)
	if len(rows) != 1 {
		t.Fatalf("rows %v; logs %s", rows, logs)
	}
	if s, _ := field(t, rows[0], "Default", "Status").(string); !strings.HasPrefix(s, "queued") ||
		!strings.Contains(s, "certificate") {
		t.Errorf("unverifiable receiver: Status %q, want queued with a certificate error", s)
	}
	for _, col := range []string{"Skip", "CA"} {
		if s := field(t, rows[0], col, "Status"); s != "sent (HTTP 200)" {
			t.Errorf("%s: Status %v; logs %s", col, s, logs)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(bodies, ",") != "skip,ca" {
		t.Errorf("receiver got %q, want skip,ca (never the unverified one)", bodies)
	}
	if !strings.Contains(logs, "1 queued alerts not delivered when the query ended") {
		t.Errorf("the unverified alert's queue was not reported at the end: %s", logs)
	}
}

// One queue per receiver for the whole query: alerts queued by separate
// calls go out in order once the receiver is back, and the retry loop
// ends with the query.
func TestFunctionQueueAcrossCalls(t *testing.T) {
	rcv := newReceiver(t)
	rcv.stop()
	go func() {
		time.Sleep(400 * time.Millisecond)
		rcv.start()
	}()
	rows, logs := run(t, acl_managers.NullACLManager{}, `
SELECT * FROM chain(
  a={ SELECT netwatch_webhook(url=URL, data=format(format="c%v", args=_value),
                              retry_delay=0.05, max_delay=0.1).Outcome AS Outcome
      FROM range(end=4) },
  b={ SELECT sleep(time=2) AS Slept FROM scope() })`,
		ordereddict.NewDict().Set("URL", "http://"+rcv.addr+"/"))
	if len(rows) != 5 {
		t.Fatalf("rows %v; logs %s", rows, logs)
	}
	for _, r := range rows[:4] {
		if v, _ := r.Get("Outcome"); v != "queued" {
			t.Errorf("during the outage: %v", r)
		}
	}
	if got := strings.Join(rcv.received(), ","); got != "c0,c1,c2,c3" {
		t.Errorf("received %q, want c0,c1,c2,c3; logs %s", got, logs)
	}
	if !strings.Contains(logs, "delivery resumed") {
		t.Errorf("logs: %s", logs)
	}

	// Receiver down for good: the query's end stops the retry loop
	// (scope.Close waits for it) and says what was not delivered.
	rcv.stop()
	start := time.Now()
	_, logs = run(t, acl_managers.NullACLManager{},
		`SELECT netwatch_webhook(url=URL, data="lost", retry_delay=0.05) FROM scope()`,
		ordereddict.NewDict().Set("URL", "http://"+rcv.addr+"/"))
	if !strings.Contains(logs, "1 queued alerts not delivered when the query ended") {
		t.Errorf("logs: %s", logs)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the query took %v to end with a dead receiver", took)
	}
}

func TestFunctionDocs(t *testing.T) {
	testutil.CheckVQLDocs(t, "../../docs/vql/netwatch_webhook.yaml", functionName,
		acls.NETWORK.String(), WebhookArgs{})
}

// A receiver that cannot be set up (here: a secret outside the server)
// is reported once per query, not once per alert.
func TestFunctionSetupErrorLoggedOnce(t *testing.T) {
	rows, logs := run(t, acl_managers.NullACLManager{},
		`SELECT netwatch_webhook(secret="netwatch-missing", data="x") AS R FROM range(end=3)`, nil)
	if len(rows) != 3 {
		t.Fatalf("rows %v", rows)
	}
	for _, r := range rows {
		if v, _ := r.Get("R"); !utils.IsNil(v) {
			t.Errorf("returned %v, want NULL", v)
		}
	}
	if n := strings.Count(logs, "secrets can only be used on the server"); n != 1 {
		t.Errorf("%d error lines for 3 alerts, want 1: %q", n, logs)
	}
}
