package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/tools/deploy"
	"github.com/netwatch-dfir/netwatch/tools/webhook"
)

// TestPool runs upstream's pool_client: NETWATCH_LOAD_CLIENTS virtual
// clients (15 by default, `make load` 200) in one process against one
// server, all running the client artifact with its defaults (but for the
// loopback and outbound settings the test's traffic needs). The virtual
// clients share this host, so each reports the same connections: one
// connection to the alerted port must give exactly one webhook per
// virtual client. Then NETWATCH_LOAD_SECONDS (default 20, `make load`
// 120) of traffic: a connection every 2 s that no rule matches, and every
// 10 s one that matches (each to another port, so the server's dedup
// does not fold them), alerted under the server artifact's default caps.
// It asserts that no alert is doubled, that every matching connection of
// every client is alerted or counted in a summary, and that the server
// pushed no client event table while alerts flowed (client_event_update
// on its monitoring port). It reports the server's and the pool's CPU
// time and memory, the alert latency and the volume stored per client,
// and writes them to NETWATCH_LOAD_REPORT if set.
func TestPool(t *testing.T) {
	binary, exe, processName := needBinary(t)
	n := 15
	if s := os.Getenv("NETWATCH_LOAD_CLIENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("NETWATCH_LOAD_CLIENTS=%q: want a positive number", s)
		}
	}
	phase := 20 * time.Second
	if s := os.Getenv("NETWATCH_LOAD_SECONDS"); s != "" {
		sec, err := strconv.Atoi(s)
		if err != nil || sec < 10 {
			t.Fatalf("NETWATCH_LOAD_SECONDS=%q: want a number of seconds, at least 10", s)
		}
		phase = time.Duration(sec) * time.Second
	}
	// Enrolment is the slow part (each virtual client makes its key and
	// is interrogated): budget it per client.
	budget := 3*time.Minute + time.Duration(n)*1500*time.Millisecond + 2*phase
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	testStart := time.Now()

	target := listen(t, loadAddr)
	canary := listen(t, loadAddr)
	noise := listen(t, loadAddr)
	// One port per matching connection of the sustained phase.
	var alerted []*listener
	alertPorts := []string{strconv.Itoa(target.port), strconv.Itoa(canary.port)}
	for i := 0; i < int(phase/loadMatchEvery); i++ {
		l := listen(t, loadAddr)
		alerted = append(alerted, l)
		alertPorts = append(alertPorts, strconv.Itoa(l.port))
	}
	hook, err := webhook.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hook.Close() })

	r := newRig(ctx, t, binary, exe)
	r.startServer(deploy.Ports{})
	serverPid := r.d.Pid()

	// The pool takes its event table once, from its first virtual client
	// to get one, so the monitoring is set before it starts. The client
	// artifact's Period is its default (0.25 s); its default
	// ExcludeOwnTraffic drops the pool's own connections to the server
	// (one process, its Pid), or each virtual client would report the
	// pool's N connections (and every reconnection). The server artifact
	// keeps its default dedup and rate caps.
	params := map[string]string{}
	for k, v := range clientParams {
		params[k] = v
	}
	delete(params, "Period")
	// Only the test's own traffic (to loadAddr): on a shared machine
	// other loopback traffic would be multiplied by every virtual client.
	params["ExcludeRemoteNetworks"] = "Network,Description\n" +
		strings.Join(networksExcept(loadAddr), ",\n") + ",\n"
	if err := r.d.SetClientMonitoring(ctx, deploy.ClientArtifact, params); err != nil {
		t.Fatal(err)
	}
	// Two rules (the server artifact's Rules table): the canaries and the
	// one connection, and the sustained phase's ports. The fleet-wide cap
	// is off, so that the one connection gives exactly one webhook per
	// client; the per-client dedup and rate cap keep their defaults.
	rule := func(name, sev string, ports []string) string {
		return strings.Join([]string{name, sev, "netwatch load test", "", "",
			"^" + regexp.QuoteMeta(processName) + "$", "", loadAddr,
			strings.Join(ports, " "), "outbound"}, ",")
	}
	serverParams := map[string]string{
		"WebHook":       hook.URL(),
		"WebHookFormat": "json",
		"Rules": "Name,Severity,Description,Label,ClientRegex,ProcessNameRegex,ProcessPathRegex,RemoteNetwork,RemotePort,Direction\n" +
			rule("load-live", "low", alertPorts[:2]) + "\n" +
			rule("load-sustained", "high", alertPorts[2:]) + "\n",
		"GlobalRateLimit": "0",
	}
	// NETWATCH_LOAD_SERVER_PARAMS="Name=value;Name=value" sets more (to
	// compare settings; the report names them).
	var extra []string
	for _, kv := range strings.Split(os.Getenv("NETWATCH_LOAD_SERVER_PARAMS"), ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			serverParams[strings.TrimSpace(k)] = v
			extra = append(extra, "`"+strings.TrimSpace(k)+"` "+v)
		} else if strings.TrimSpace(kv) != "" {
			t.Fatalf("NETWATCH_LOAD_SERVER_PARAMS: %q is not Name=value", kv)
		}
	}
	if err := r.d.SetServerMonitoring(ctx, deploy.ServerArtifact, serverParams); err != nil {
		t.Fatal(err)
	}

	// ---- enrolment -------------------------------------------------------
	cpu0 := cpuTime(serverPid)
	poolStart := time.Now()
	pool, err := r.d.StartPool(ctx, deploy.PoolOptions{Name: "load", Number: n})
	if err != nil {
		t.Fatal(err)
	}
	r.track(pool)
	ids := map[string]bool{}
	for len(ids) < n {
		clients, err := r.d.Clients(ctx)
		if err == nil {
			for _, c := range clients {
				ids[c.ID] = true
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d virtual clients enrolled after %v; pool log:\n%s",
				len(ids), n, time.Since(poolStart), pool.LogTail(20))
		case <-pool.Done():
			t.Fatalf("pool_client exited:\n%s", pool.LogTail(20))
		case <-time.After(time.Second):
		}
	}
	enrolled := time.Since(poolStart)
	cpuEnrol := cpuTime(serverPid) - cpu0
	poolCPUEnrol := cpuTime(pool.Pid())
	t.Logf("%d virtual clients enrolled in %v (server CPU %v, pool CPU %v)", n,
		enrolled.Round(time.Millisecond), cpuEnrol.Round(time.Millisecond), poolCPUEnrol.Round(time.Millisecond))

	// ---- the alert path is live for the pool -----------------------------
	// Canary connections until one alerts: the pool's shared query runs and
	// the server alerts on its rows. Then wait until the canaries' webhooks
	// stop coming, so they do not overlap with the measured connection.
	liveStart := time.Now()
	waitLiveHold(ctx, t, r.children, hook, canary.addr(), 2500*time.Millisecond, func(a webhook.Alert) bool {
		return a.Raddr.Port == canary.port
	})
	settle(ctx, hook, 3*time.Second)
	live := time.Since(liveStart)
	canaries := len(hook.Alerts())

	// ---- one connection: one webhook per virtual client -------------------
	// Held 2.5 s: a period of 1 s sees it at least twice with its process.
	cpu1, poolCPU1 := cpuTime(serverPid), cpuTime(pool.Pid())
	c := r.children.connect(ctx, target.addr(), 2500*time.Millisecond)
	deadline := time.Now().Add(30*time.Second + time.Duration(n)*100*time.Millisecond)
	var got []webhook.Alert
	for time.Now().Before(deadline) && ctx.Err() == nil {
		got = hook.Matching(func(a webhook.Alert) bool { return a.Process.Pid == c.pid })
		if len(got) >= n {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	allIn := time.Since(c.started)
	// Doubles would come late: wait a little longer before counting.
	settle(ctx, hook, 5*time.Second)
	got = hook.Matching(func(a webhook.Alert) bool { return a.Process.Pid == c.pid })
	cpuAlert := cpuTime(serverPid) - cpu1
	poolCPUAlert := cpuTime(pool.Pid()) - poolCPU1
	perClient := map[string]int{}
	var first, last time.Time
	for _, a := range got {
		perClient[a.ClientId]++
		if first.IsZero() || a.Received.Before(first) {
			first = a.Received
		}
		if a.Received.After(last) {
			last = a.Received
		}
	}
	doubled := 0
	for id, k := range perClient {
		if !ids[id] {
			t.Errorf("webhook for client %s, which is not one of the pool's", id)
		}
		if k > 1 {
			doubled++
			t.Errorf("client %s: %d webhooks for the one connection, want 1", id, k)
		}
	}
	if doubled > 0 {
		// Are the rows doubled in storage too, and are they one row sent
		// twice (same ConnId) or two watchers' rows?
		for id, k := range perClient {
			if k < 2 {
				continue
			}
			rows, err := r.rowsSince(id, c.started.Add(-2*time.Second))
			for _, row := range filterRows(rows, c.pid, target.port, "added") {
				t.Logf("client %s stored row: ConnId %v Timestamp %v FirstSeen %v (err %v)",
					id, row["ConnId"], row["Timestamp"], row["FirstSeen"], err)
			}
			break
		}
	}
	if len(got) != n || len(perClient) != n {
		t.Errorf("%d webhooks from %d distinct clients for pid %d's connection, want %d from %d",
			len(got), len(perClient), c.pid, n, n)
	}
	t.Logf("one connection: %d webhooks from %d clients; first %v, last %v after it opened",
		len(got), len(perClient), first.Sub(c.started).Round(time.Millisecond),
		last.Sub(c.started).Round(time.Millisecond))

	// ---- sustained traffic, some of it alerting --------------------------
	sus := runSustained(ctx, t, r, hook, pool.Pid(), serverPid, ids, noise, alerted, phase)

	// ---- steady state: monitoring with nothing to alert on ----------------
	const idle = 20 * time.Second
	cpu2, poolCPU2 := cpuTime(serverPid), cpuTime(pool.Pid())
	time.Sleep(idle)
	cpuIdle, poolCPUIdle := cpuTime(serverPid)-cpu2, cpuTime(pool.Pid())-poolCPU2
	serverHWM, poolHWM := procStatus(serverPid, "VmHWM:"), procStatus(pool.Pid(), "VmHWM:")

	report := fmt.Sprintf(`## Load: %d virtual clients (pool_client), one server

Measured %s on %s by TestPool (tools/e2e/load_test.go), the client
artifact's default Period (0.25 s); the server artifact with two Rules, its default
dedup and per-client rate cap, the fleet-wide cap off%s.
`+sharedMachineNote+`

| | server (gui --noclient) | pool_client |
| --- | ---: | ---: |
| enrolment of %d clients: wall time | %v | |
| CPU during enrolment | %v | %v |
| CPU for one connection's %d alerts (%v window) | %v | %v |
| CPU per second, idle monitoring (%v) | %.1f ms/s | %.1f ms/s |
| peak RSS (VmHWM) | %d MiB | %d MiB |

- alert path live %v after enrolment (canaries: %d webhooks);
- one connection: %d webhooks, %d distinct clients, %d doubled; first %v, last %v after the connection opened (all in after %v).
`, n, time.Now().UTC().Format(time.RFC3339), hostDesc(), settingsNote(extra), n, enrolled.Round(time.Second),
		cpuEnrol.Round(10*time.Millisecond), poolCPUEnrol.Round(10*time.Millisecond),
		n, (allIn + 5*time.Second).Round(time.Second), cpuAlert.Round(10*time.Millisecond), poolCPUAlert.Round(10*time.Millisecond),
		idle, msPerSec(cpuIdle, idle), msPerSec(poolCPUIdle, idle),
		serverHWM>>10, poolHWM>>10,
		live.Round(time.Second), canaries,
		len(got), len(perClient), doubled, first.Sub(c.started).Round(time.Millisecond),
		last.Sub(c.started).Round(time.Millisecond), allIn.Round(time.Millisecond))
	report += sus.markdown(n)
	t.Log("\n" + report)
	if path := os.Getenv("NETWATCH_LOAD_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
			t.Error(err)
		} else {
			t.Logf("wrote %s", path)
		}
	}

	r.checkNothingLeft()
	t.Logf("pool test done in %v", time.Since(testStart).Round(time.Millisecond))
}

// settingsNote names the server parameters set beyond the test's own.
func settingsNote(extra []string) string {
	if len(extra) == 0 {
		return ""
	}
	return "; also " + strings.Join(extra, ", ")
}

// settle waits until no webhook has arrived for quiet (bounded by ctx).
func settle(ctx context.Context, hook *webhook.Receiver, quiet time.Duration) {
	for ctx.Err() == nil {
		before := len(hook.Alerts())
		select {
		case <-ctx.Done():
		case <-time.After(quiet):
		}
		if len(hook.Alerts()) == before {
			return
		}
	}
}

// cpuTime is the user + system CPU time of a process (all its threads)
// from /proc/PID/stat, or 0 once it is gone.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	// utime and stime are fields 14 and 15 of stat, 12 and 13 after comm.
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

func msPerSec(cpu, wall time.Duration) float64 {
	return float64(cpu.Milliseconds()) / wall.Seconds()
}

// hostDesc names the machine the figures come from: CPU count and model.
func hostDesc() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	cpus, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*")
	return fmt.Sprintf("%d CPUs (%s)", len(cpus), model)
}
