package webhook

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// receiver is a real HTTP receiver on a fixed loopback port that can be
// stopped and started again on the same port, and told how to answer.
type receiver struct {
	t    *testing.T
	addr string

	mu       sync.Mutex
	srv      *http.Server
	bodies   []string
	times    []time.Time
	answer   func(n int) (code int, body string, delay time.Duration) // n: 1-based request count
	requests int
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, addr: ln.Addr().String()}
	r.answer = func(int) (int, string, time.Duration) { return 200, "ok", 0 }
	r.serve(ln)
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: r}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go srv.Serve(ln)
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.requests++
	code, answer, delay := r.answer(r.requests)
	if code >= 200 && code < 300 {
		r.bodies = append(r.bodies, string(body))
		r.times = append(r.times, time.Now())
	}
	r.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return
		}
	}
	if code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(code)
	io.WriteString(w, answer)
}

// stop closes the listener and every connection: the port refuses.
func (r *receiver) stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// start listens on the same port again.
func (r *receiver) start() {
	r.t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("listening again on %s: %v", r.addr, err)
	}
	r.serve(ln)
}

func (r *receiver) setAnswer(f func(n int) (int, string, time.Duration)) {
	r.mu.Lock()
	r.answer = f
	r.mu.Unlock()
}

func (r *receiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// logs collects a sender's log lines.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *logs) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *logs) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}

func newSender(t *testing.T, rawURL string, l *logs, mod func(*Options)) *Sender {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{URL: u, Client: &http.Client{Timeout: 2 * time.Second},
		Header:     http.Header{"Content-Type": {"application/json"}},
		RetryDelay: 20 * time.Millisecond, MaxDelay: 100 * time.Millisecond,
		QueueSize: 100, Logf: l.logf}
	if mod != nil {
		mod(&opts)
	}
	s := New(context.Background(), opts)
	t.Cleanup(s.Close)
	return s
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOutageQueuesInOrderAndResumes(t *testing.T) {
	rcv := newReceiver(t)
	l := &logs{}
	s := newSender(t, "http://"+rcv.addr+"/hook", l, nil)

	if r := s.Send([]byte("a1")); r.Outcome != Sent || r.Code != 200 || r.Status() != "sent (HTTP 200)" {
		t.Fatalf("first alert: %+v", r)
	}

	rcv.stop()
	var results []Result
	for i := 2; i <= 6; i++ {
		results = append(results, s.Send([]byte(fmt.Sprintf("a%d", i))))
	}
	// Refused, or (on a kept-alive connection the stop closed) EOF.
	if r := results[0]; r.Outcome != Queued || r.Waiting != 1 ||
		!(strings.Contains(r.Detail, "connection refused") || strings.Contains(r.Detail, "closed the connection")) {
		t.Errorf("first alert of the outage: %+v", r)
	}
	for i, r := range results[1:] {
		if r.Outcome != Queued || r.Waiting < 1 {
			t.Errorf("alert a%d during the outage: %+v", i+3, r)
		}
	}
	// Let the retry loop fail a few times (backoff) before the receiver
	// comes back.
	time.Sleep(300 * time.Millisecond)
	if n := l.count("failed again"); n < 2 {
		t.Errorf("%d retry log lines during the outage, want several:\n%s", n, l.all())
	}
	rcv.start()
	waitFor(t, "the queue to drain", func() bool { return len(rcv.received()) == 6 })
	time.Sleep(100 * time.Millisecond) // nothing more may arrive
	if got, want := strings.Join(rcv.received(), ","), "a1,a2,a3,a4,a5,a6"; got != want {
		t.Errorf("received %s, want %s (in order, once each)", got, want)
	}
	st := s.counters()
	if st.Sent != 6 || st.Dropped != 0 || st.Waiting != 0 || st.Rejected != 0 {
		t.Errorf("stats %+v", st)
	}
	if l.count("delivery resumed") != 1 {
		t.Errorf("want one 'resumed' line:\n%s", l.all())
	}
	// Back to direct delivery.
	if r := s.Send([]byte("a7")); r.Outcome != Sent {
		t.Errorf("after the outage: %+v", r)
	}
}

func TestServerErrorsRetriedWithDoublingDelays(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(n int) (int, string, time.Duration) {
		if n <= 4 {
			return 500, "upstream broken", 0
		}
		return 200, "ok", 0
	})
	var attempts []time.Time
	var mu sync.Mutex
	l := &logs{}
	s := newSender(t, "http://"+rcv.addr+"/", l, func(o *Options) {
		o.RetryDelay, o.MaxDelay = 40*time.Millisecond, time.Second
		base := o.Client.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		o.Client.Transport = roundTripFunc(func(req *http.Request) (*http.Response, error) {
			mu.Lock()
			attempts = append(attempts, time.Now())
			mu.Unlock()
			return base.RoundTrip(req)
		})
	})
	r := s.Send([]byte("x"))
	if r.Outcome != Queued || r.Code != 500 || r.Detail != "HTTP 500" || r.Response != "upstream broken" {
		t.Fatalf("first attempt: %+v", r)
	}
	waitFor(t, "delivery", func() bool { return len(rcv.received()) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 5 {
		t.Fatalf("%d attempts, want 5 (4 failures then success)", len(attempts))
	}
	// Lower bounds only: a loaded machine may be late, never early.
	for i, want := range []time.Duration{40, 80, 160, 320} {
		if gap := attempts[i+1].Sub(attempts[i]); gap < want*time.Millisecond {
			t.Errorf("gap before attempt %d: %v, want at least %v ms", i+2, gap, want)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestSlowReceiverTimesOutThenDelivers(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(n int) (int, string, time.Duration) {
		if n <= 2 {
			return 200, "late", 2 * time.Second
		}
		return 200, "ok", 0
	})
	l := &logs{}
	s := newSender(t, "http://"+rcv.addr+"/", l, func(o *Options) {
		o.Client.Timeout = 150 * time.Millisecond
	})
	start := time.Now()
	r := s.Send([]byte("slow"))
	if r.Outcome != Queued || !strings.Contains(r.Detail, "no answer within 150ms") {
		t.Fatalf("slow receiver: %+v", r)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Send waited %v for a slow receiver, want about the 150 ms timeout", took)
	}
	waitFor(t, "delivery", func() bool { return rcv.count() >= 3 && s.counters().Waiting == 0 })
	if st := s.counters(); st.Sent != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestRejectedIsNotRetried(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(n int) (int, string, time.Duration) {
		if n == 1 {
			return 400, "invalid_payload", 0
		}
		return 200, "ok", 0
	})
	l := &logs{}
	s := newSender(t, "http://"+rcv.addr+"/", l, nil)
	r := s.Send([]byte("bad"))
	if r.Outcome != Rejected || r.Code != 400 || r.Status() != "rejected: HTTP 400" || r.Response != "invalid_payload" {
		t.Fatalf("400: %+v", r)
	}
	if r := s.Send([]byte("good")); r.Outcome != Sent {
		t.Fatalf("next alert: %+v", r)
	}
	time.Sleep(100 * time.Millisecond)
	if n := rcv.count(); n != 2 {
		t.Errorf("%d requests, want 2 (no retry of a rejected alert)", n)
	}
	if l.count("rejected an alert: HTTP 400; response: invalid_payload") != 1 {
		t.Errorf("log:\n%s", l.all())
	}
}

func TestTooManyRequestsHonoursRetryAfter(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(n int) (int, string, time.Duration) {
		if n == 1 {
			return http.StatusTooManyRequests, "slow down", 0
		}
		return 200, "ok", 0
	})
	s := newSender(t, "http://"+rcv.addr+"/", &logs{}, nil)
	start := time.Now()
	if r := s.Send([]byte("x")); r.Outcome != Queued || r.Code != 429 {
		t.Fatalf("429: %+v", r)
	}
	waitFor(t, "delivery", func() bool { return len(rcv.received()) == 1 })
	if took := time.Since(start); took < time.Second {
		t.Errorf("retried after %v, want at least the 1 s of Retry-After", took)
	}
}

func TestQueueIsBounded(t *testing.T) {
	rcv := newReceiver(t)
	rcv.stop()
	l := &logs{}
	s := newSender(t, "http://"+rcv.addr+"/", l, func(o *Options) {
		o.QueueSize = 3
		o.RetryDelay, o.MaxDelay = 50*time.Millisecond, 50*time.Millisecond
	})
	for i := 1; i <= 8; i++ {
		if r := s.Send([]byte(fmt.Sprintf("b%d", i))); r.Outcome != Queued || r.Waiting > 3 {
			t.Fatalf("b%d: %+v", i, r)
		}
	}
	if st := s.counters(); st.Waiting != 3 || st.Dropped != 5 {
		t.Errorf("stats after 8 alerts into a queue of 3: %+v", st)
	}
	if n := l.count("webhook queue full (3 alerts)"); n != 1 {
		t.Errorf("%d 'queue full' lines, want 1 per outage:\n%s", n, l.all())
	}
	rcv.start()
	waitFor(t, "the queue to drain", func() bool { return s.counters().Waiting == 0 })
	// The newest three, in order (the in-flight oldest is never the one
	// dropped, so on a loaded machine b1 may have been in flight; it
	// cannot be here: the receiver was down for all of b1..b8's sends).
	if got := strings.Join(rcv.received(), ","); got != "b6,b7,b8" {
		t.Errorf("received %s, want b6,b7,b8", got)
	}
	if !strings.Contains(l.all(), "5 dropped because the queue was full") {
		t.Errorf("log:\n%s", l.all())
	}
}

func TestURLNeverLoggedNorReturned(t *testing.T) {
	const token = "T0KEN-xoxb-7f3a9c"
	rcv := newReceiver(t)
	path := "/services/" + token
	full := "http://" + rcv.addr + path + "?key=" + token + "q"
	// The receiver echoes the URL and the path in its error, as some do.
	rcv.setAnswer(func(n int) (int, string, time.Duration) {
		switch n {
		case 1:
			return 500, "no route for " + path + " (" + full + ")", 0
		case 2:
			return 404, "unknown webhook " + token, 0
		}
		return 200, "ok " + full, 0
	})
	l := &logs{}
	// No kept-alive connection: after the stop, the request dials and is
	// refused, and net/http's error for that quotes the whole URL.
	s := newSender(t, full, l, func(o *Options) {
		o.Client.Transport = &http.Transport{DisableKeepAlives: true}
	})
	var out []string
	for _, p := range []string{"one", "two"} {
		r := s.Send([]byte(p))
		out = append(out, fmt.Sprintf("%+v %s", r, r.Status()))
	}
	waitFor(t, "delivery", func() bool { return s.counters().Waiting == 0 })
	rcv.stop()
	r := s.Send([]byte("three"))
	out = append(out, fmt.Sprintf("%+v %s", r, r.Status()))
	s.Close()
	text := strings.Join(out, "\n") + "\n" + l.all()
	if strings.Contains(text, token) || strings.Contains(text, rcv.addr+"/services") {
		t.Errorf("the URL or its token leaked:\n%s", text)
	}
	if !strings.Contains(text, "<redacted>") || !strings.Contains(text, "connection refused") {
		t.Errorf("want the causes, redacted:\n%s", text)
	}
}

func TestRetryLoopEndsWithContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rcv := newReceiver(t)
	rcv.stop()
	ctx, cancel := context.WithCancel(context.Background())
	l := &logs{}
	u, _ := url.Parse("http://" + rcv.addr + "/")
	s := New(ctx, Options{URL: u, RetryDelay: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond,
		QueueSize: 10, Logf: l.logf})
	s.Send([]byte("x"))
	s.Send([]byte("y"))
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("retry loop still running 5 s after its context ended")
	}
	if !strings.Contains(l.all(), "2 queued alerts not delivered when the query ended") {
		t.Errorf("log:\n%s", l.all())
	}
	s.Close() // idempotent after the context ended
}
