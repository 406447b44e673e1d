package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/tools/deploy"
)

// The `query` command exits with an error status when netstat_watch() or
// netwatch_webhook() is given a bad argument (Velociraptor's CLI fails a
// query that logs at ERROR level), and with 0 when the arguments are good.
func TestQueryCommandFailsOnBadArgument(t *testing.T) {
	binary, _, _ := needBinary(t)
	for _, tc := range []struct {
		query, want string // want: "" for success
	}{
		{"SELECT * FROM netstat_watch(period=0)", "netstat_watch: period must be"},
		{"SELECT * FROM netstat_watch(kinds='sctp')", "netstat_watch: kinds"},
		{"SELECT netwatch_webhook(data='x') FROM scope()", "netwatch_webhook: url or secret is required"},
		{"SELECT netwatch_webhook(url='http://127.0.0.1:9/', data='x', queue_size=0) FROM scope()",
			"netwatch_webhook: queue_size must be"},
		// emit_existing: this host has sockets (the tests' own at least).
		{"SELECT * FROM netstat_watch(period=0.1, emit_existing=true) LIMIT 1", ""},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, binary, "--nobanner", "query", tc.query)
		cmd.Dir = t.TempDir()
		cmd.Env = append(os.Environ(), "VELOCIRAPTOR_CONFIG=", "VELOCIRAPTOR_LITERAL_CONFIG=")
		out, err := cmd.CombinedOutput()
		cancel()
		var exit *exec.ExitError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v\n%s", tc.query, err, out)
		case tc.want != "" && !errors.As(err, &exit):
			t.Errorf("%s: exit status %v, want a failure\n%s", tc.query, err, out)
		case tc.want != "" && !strings.Contains(string(out), tc.want):
			t.Errorf("%s: output does not say %q:\n%s", tc.query, tc.want, out)
		}
	}
}

// A client collection whose query gives netstat_watch() a bad argument ends
// in the ERROR state with the plugin's message: the GUI shows it failed.
// The same artifact with a good argument finishes.
func TestBadArgumentFailsCollection(t *testing.T) {
	binary, exe, _ := needBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := newRig(ctx, t, binary, exe)
	r.startServer(deploy.Ports{})
	id := r.waitClientID(r.startClient("c1"))

	const artifact = "Custom.Netwatch.ArgCheck"
	def := `name: ` + artifact + `
type: CLIENT
parameters:
  - name: Period
    type: float
sources:
  - query: SELECT * FROM netstat_watch(period=Period, emit_existing=true) LIMIT 1
`
	if _, err := r.d.Query(ctx, `SELECT artifact_set(definition=Def) FROM scope()`,
		map[string]string{"Def": def}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ period, state, status string }{
		{"0", "ERROR", "netstat_watch: period must be"},
		{"0.1", "FINISHED", ""},
	} {
		out, logs, err := r.d.QueryRaw(ctx, `
SELECT collect_client(client_id=NetwatchClient, artifacts=NetwatchArtifact,
                      env=dict(Period=NetwatchPeriod)).flow_id AS FlowId
FROM scope()`, map[string]string{"NetwatchClient": id, "NetwatchArtifact": artifact,
			"NetwatchPeriod": tc.period}, "json")
		var rows []deploy.Row
		if err == nil {
			err = json.Unmarshal(out, &rows)
		}
		if err != nil || len(rows) != 1 || rows[0]["FlowId"] == nil {
			t.Fatalf("collect_client: %s %v\n%s", out, err, strings.Join(logs, "\n"))
		}
		flow := fmt.Sprint(rows[0]["FlowId"])
		state, status := waitFlowDone(ctx, t, r.d, id, flow)
		if state != tc.state || !strings.Contains(status, tc.status) {
			t.Errorf("Period=%s: flow %s ended %s (%q), want %s (%q)",
				tc.period, flow, state, status, tc.state, tc.status)
		}
	}
	r.checkNothingLeft()
}

// waitFlowDone waits until the flow is done (neither WAITING for the
// client to take it, nor RUNNING) and returns its state and status message.
func waitFlowDone(ctx context.Context, t *testing.T, d *deploy.Deployment, client, flow string) (state, status string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		rows, err := d.Query(ctx, `SELECT state, status FROM flows(client_id=NetwatchClient, flow_id=NetwatchFlow)`,
			map[string]string{"NetwatchClient": client, "NetwatchFlow": flow})
		if err == nil && len(rows) == 1 {
			state, status = fmt.Sprint(rows[0]["state"]), fmt.Sprint(rows[0]["status"])
			if state != "WAITING" && state != "RUNNING" && state != "<nil>" {
				return state, status
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("flow %s still %s after 90 s", flow, state)
	return "", ""
}
