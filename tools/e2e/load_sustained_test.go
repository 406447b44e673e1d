package e2e

// The sustained phase of TestPool: minutes of traffic from every virtual
// client, some of it alerting, with the figures docs/RELIABILITY.md
// reports.

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/tools/deploy"
	"github.com/netwatch-dfir/netwatch/tools/webhook"
)

const (
	// A matching connection every loadMatchEvery, each to its own port.
	loadMatchEvery = 10 * time.Second
	// Held by a child process long enough to be seen with its process.
	loadMatchHold = 2500 * time.Millisecond
	// A connection no rule matches every loadNoiseEvery.
	loadNoiseEvery = 2 * time.Second
)

// loadAddr is where the load test's listeners are: a loopback address of
// its own, so that the client artifact can leave out everything else.
const loadAddr = "127.0.0.77"

// networksExcept is every IPv4 network but ip, as 32 CIDRs: the ip's
// prefix of each length with its last bit flipped.
func networksExcept(ip string) []string {
	a := netip.MustParseAddr(ip).As4()
	v := binary.BigEndian.Uint32(a[:])
	var out []string
	for bits := 1; bits <= 32; bits++ {
		flipped := (v >> (32 - bits) << (32 - bits)) ^ (1 << (32 - bits))
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], flipped)
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(b), bits).String())
	}
	return out
}

const sharedMachineNote = `The machine has 2 cores, shared during the run with four other
engineers' builds and tests: CPU figures are what this test's processes
used; latencies include waiting for a core on a loaded machine.`

// sustained holds what the sustained phase measured.
type sustained struct {
	phase     time.Duration
	matching  []conn
	noise     int
	expected  int
	delivered int // alerts for the matching connections, all clients
	distinct  int // distinct (client, connection) pairs alerted
	clients   int // clients with at least one such alert
	doubled   int // (client, connection) pairs alerted more than once
	summaries int // summaries received during the phase
	counted   int // events suppressed and counted in those summaries
	missing   int
	latencies []time.Duration

	pushesBefore, pushesAfter float64
	ownRows                   int // stored rows owned by the pool process
	ownChecked                int // stored rows looked at for it

	serverCPU, poolCPU   time.Duration
	wall                 time.Duration
	serverRSS, serverHWM int64 // KiB
	storedRows           int64
	storedBytes          int64
}

// runSustained makes the phase's connections, waits for their alerts and
// checks them: none doubled, none lost (alerted or counted in a
// summary), no client event table pushed.
func runSustained(ctx context.Context, t *testing.T, r *rig, hook *webhook.Receiver,
	poolPid, serverPid int, ids map[string]bool, noise *listener, alerted []*listener,
	phase time.Duration) *sustained {
	t.Helper()
	s := &sustained{phase: phase}
	var err error
	if s.pushesBefore, err = metric(ctx, r.d.Ports.Monitoring, "client_event_update"); err != nil {
		t.Fatal(err)
	}
	rows0, bytes0 := storedVolume(r.d.Dir)
	cpu0, poolCPU0 := cpuTime(serverPid), cpuTime(poolPid)
	start := time.Now()

	stop := make(chan struct{})
	waitNoise := dialLoop(noise.addr(), loadNoiseEvery, stop)
	for i, l := range alerted {
		slot := start.Add(time.Duration(i)*loadMatchEvery + time.Second)
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(slot)):
		}
		if ctx.Err() != nil {
			break
		}
		s.matching = append(s.matching, r.children.connect(ctx, l.addr(), loadMatchHold))
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(start.Add(phase))):
	}
	close(stop)
	s.noise = len(waitNoise())

	byPid := map[int]conn{}
	for _, c := range s.matching {
		byPid[c.pid] = c
	}
	s.expected = len(s.matching) * len(ids)
	account := func() {
		s.delivered, s.summaries, s.counted = 0, 0, 0
		s.latencies = s.latencies[:0]
		per := map[string]int{}
		clients := map[string]bool{}
		for _, a := range hook.Alerts() {
			if a.Type == "summary" {
				if !a.Received.Before(start) {
					s.summaries++
					s.counted += num(a.Suppressed)
				}
				continue
			}
			c, ok := byPid[a.Process.Pid]
			if !ok {
				continue
			}
			s.delivered++
			per[fmt.Sprintf("%s/%d", a.ClientId, c.pid)]++
			clients[a.ClientId] = true
			s.latencies = append(s.latencies, a.Received.Sub(c.started))
		}
		s.distinct, s.doubled, s.clients = len(per), 0, len(clients)
		for _, k := range per {
			if k > 1 {
				s.doubled++
			}
		}
		s.missing = max(0, s.expected-s.distinct-s.counted)
	}
	// The last matching connection's alerts need a batch wait and the
	// server's work through a backlog: wait until everything is in, then
	// a quiet spell for late doubles.
	for deadline := time.Now().Add(90*time.Second + time.Duration(len(ids))*200*time.Millisecond); time.Now().Before(deadline) && ctx.Err() == nil; {
		if account(); s.missing == 0 {
			break
		}
		time.Sleep(time.Second)
	}
	settle(ctx, hook, 5*time.Second)
	account()
	s.wall = time.Since(start)
	s.serverCPU, s.poolCPU = cpuTime(serverPid)-cpu0, cpuTime(poolPid)-poolCPU0
	s.serverRSS, s.serverHWM = procStatus(serverPid, "VmRSS:"), procStatus(serverPid, "VmHWM:")
	if s.pushesAfter, err = metric(ctx, r.d.Ports.Monitoring, "client_event_update"); err != nil {
		t.Error(err)
	}
	rows1, bytes1 := storedVolume(r.d.Dir)
	s.storedRows, s.storedBytes = rows1-rows0, bytes1-bytes0

	// The pool's own connections (to the server) are excluded by its Pid:
	// look at one client's stored rows of the phase. A matching connection
	// no client alerted on: what did that client store about it?
	alertedPids := map[int]bool{}
	for _, a := range hook.Alerts() {
		alertedPids[a.Process.Pid] = true
	}
	for id := range ids {
		rows, err := r.rowsSince(id, start)
		if err != nil {
			t.Errorf("rows of %s: %v", id, err)
		}
		s.ownChecked = len(rows)
		for _, row := range rows {
			if num(row["Pid"]) == poolPid {
				s.ownRows++
			}
		}
		for _, c := range s.matching {
			if alertedPids[c.pid] {
				continue
			}
			var seen []string
			for _, row := range rows {
				if l, ok := row["Laddr"].(map[string]any); ok && num(l["Port"]) == c.localPort {
					seen = append(seen, fmt.Sprintf("%v Pid %v Status %v Timestamp %v",
						row["Diff"], row["Pid"], row["Status"], row["Timestamp"]))
				}
			}
			t.Logf("no alert for pid %d's connection from port %d (opened %v); client %s stored: %v",
				c.pid, c.localPort, c.started.Format(time.RFC3339Nano), id, seen)
		}
		break
	}

	if s.doubled > 0 {
		t.Errorf("%d (client, connection) pairs alerted more than once", s.doubled)
	}
	if s.missing > 0 {
		t.Errorf("%d of %d expected alerts neither delivered nor counted in a summary (delivered %d distinct, %d counted in %d summaries)",
			s.missing, s.expected, s.distinct, s.counted, s.summaries)
	}
	if s.pushesAfter != s.pushesBefore {
		t.Errorf("client_event_update went from %v to %v while alerts flowed: the server pushed client event tables",
			s.pushesBefore, s.pushesAfter)
	}
	if s.ownRows > 0 {
		t.Errorf("%d stored rows owned by the pool process (pid %d): its own traffic is not excluded", s.ownRows, poolPid)
	}
	if len(s.matching) > 0 && s.ownChecked == 0 {
		t.Error("no stored rows for the phase: the check of the pool's own traffic saw nothing")
	}
	t.Logf("sustained %v: %d matching connections, %d others; %d of %d alerts (%d distinct, %d doubled, %d counted in %d summaries), latency p50 %v p99 %v; client_event_update %v -> %v; server CPU %v",
		phase, len(s.matching), s.noise, s.delivered, s.expected, s.distinct, s.doubled, s.counted, s.summaries,
		s.percentile(50), s.percentile(99), s.pushesBefore, s.pushesAfter, s.serverCPU)
	return s
}

func (s *sustained) percentile(p int) time.Duration {
	if len(s.latencies) == 0 {
		return 0
	}
	l := append([]time.Duration(nil), s.latencies...)
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l[min(len(l)-1, len(l)*p/100)].Round(10 * time.Millisecond)
}

func (s *sustained) markdown(n int) string {
	perHour := func(v int64) float64 { return float64(v) / float64(n) / s.wall.Hours() }
	bytesPerRow := int64(0)
	if s.storedRows > 0 {
		bytesPerRow = s.storedBytes / s.storedRows
	}
	return fmt.Sprintf(`
Sustained traffic, %v (then %v of waiting for the last alerts):

- connections: %d matching the alert rule (one every %v, each to its own
  port so that the dedup does not fold them, held %v by a child process),
  %d others (one every %v from the test process, no rule matches);
- alerts expected: %d (%d clients x %d); delivered: %d, for %d distinct
  (client, connection) pairs from %d clients; %d doubled; %d counted in
  %d "suppressed" summaries; %d missing;
- alert latency, connection opened -> webhook received: p50 %v, p99 %v
  (%d alerts);
- client_event_update (client event tables pushed by the server) during
  the phase: %v (counter %v before, %v after);
- stored rows owned by the pool process itself: %d of %d of one client
  (ExcludeOwnTraffic);
- server: %.0f ms of CPU per second (%.0f %% of one core), RSS %d MiB at
  the end, peak %d MiB; pool_client: %.0f ms/s;
- stored client monitoring results: %d rows, %d bytes (%d bytes a row),
  i.e. per client per hour at this workload %.0f rows, %.2f MB.
`, s.phase, (s.wall - s.phase).Round(time.Second),
		len(s.matching), loadMatchEvery, loadMatchHold, s.noise, loadNoiseEvery,
		s.expected, n, len(s.matching), s.delivered, s.distinct, s.clients, s.doubled, s.counted,
		s.summaries, s.missing,
		s.percentile(50), s.percentile(99), len(s.latencies),
		s.pushesAfter-s.pushesBefore, s.pushesBefore, s.pushesAfter,
		s.ownRows, s.ownChecked,
		msPerSec(s.serverCPU, s.wall), msPerSec(s.serverCPU, s.wall)/10, s.serverRSS>>10, s.serverHWM>>10,
		msPerSec(s.poolCPU, s.wall),
		s.storedRows, s.storedBytes, bytesPerRow, perHour(s.storedRows), perHour(s.storedBytes)/1e6)
}

// metric reads one counter from the server's monitoring port (/metrics,
// the Prometheus text format).
func metric(ctx context.Context, port int, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("metrics: no %s on port %d (%v)", name, port, sc.Err())
}

// storedVolume is what the server stores of the client artifact for every
// client: rows (lines) and bytes of its monitoring result files.
func storedVolume(datastore string) (rows, bytes int64) {
	pattern := filepath.Join(datastore, "clients", "*", "monitoring", deploy.ClientArtifact)
	dirs, _ := filepath.Glob(pattern)
	for _, dir := range dirs {
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			bytes += int64(len(b))
			rows += int64(strings.Count(string(b), "\n"))
			return nil
		})
	}
	return rows, bytes
}

// procStatus is a "kB" field of /proc/PID/status (VmRSS:, VmHWM:) in KiB.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			k, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return k
		}
	}
	return 0
}
