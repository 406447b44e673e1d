// Package webhook delivers alert payloads to a webhook receiver (Slack,
// Teams, Discord, a SOAR) without losing them when the receiver is down,
// slow or failing, and without ever putting the receiver's URL in a log
// line, a result or an error message: webhook URLs are credentials.
//
// Stock http_client() retries nothing and logs the URL of every request
// (and, in its error line, the URL even when it came from a managed
// secret). A Sender keeps the alerts it could not deliver in a bounded
// queue, in order, and retries the oldest with doubling delays until the
// receiver takes it; new alerts queue behind it meanwhile, so a dead
// receiver costs the alert pipeline nothing.
//
// sender.go holds the delivery logic and knows nothing of VQL;
// function.go is the VQL function netwatch_webhook().
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options of a Sender.
type Options struct {
	// URL of the receiver. Never logged, returned or put in an error.
	URL *url.URL
	// Client makes the requests; its Timeout bounds a slow receiver.
	Client *http.Client
	// Header is sent with every request (Content-Type included).
	Header http.Header
	// RetryDelay is the wait before the first retry; it doubles at each
	// failed attempt up to MaxDelay.
	RetryDelay, MaxDelay time.Duration
	// QueueSize bounds the alerts waiting for the receiver; when it is
	// full the oldest waiting alert is dropped (and counted).
	QueueSize int
	// KeepBytes of the receiver's answer are kept in Result.Response.
	KeepBytes int
	// Logf receives the sender's log lines (never with the URL).
	Logf func(format string, args ...any)
}

// Outcome of one Send.
type Outcome string

const (
	Sent     Outcome = "sent"     // the receiver took it (2xx)
	Queued   Outcome = "queued"   // waiting for the receiver; retried
	Rejected Outcome = "rejected" // the receiver refused it for good (4xx)
)

// Result of one Send, for the caller's result row.
type Result struct {
	Outcome Outcome
	// Code is the receiver's HTTP status, 0 if none was received.
	Code int
	// Detail says why an alert was queued or rejected (redacted).
	Detail string
	// Response is the start of the receiver's answer (redacted).
	Response string
	// Waiting is the number of alerts queued after this Send.
	Waiting int
}

// Status is Result in one line, for people.
func (r Result) Status() string {
	switch r.Outcome {
	case Sent:
		return fmt.Sprintf("sent (HTTP %d)", r.Code)
	case Rejected:
		return fmt.Sprintf("rejected: %s", r.Detail)
	default:
		return fmt.Sprintf("queued (%d waiting): %s", r.Waiting, r.Detail)
	}
}

// senderStats counts what a Sender did (for its tests; the alerts carry
// their own outcome).
type senderStats struct {
	Sent, Retried, Rejected, Dropped, Waiting int
}

type item struct {
	seq     uint64
	payload []byte
}

// Sender delivers payloads to one receiver, in order.
type Sender struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// sendMu makes Send calls one at a time, so that the direct attempt
	// of one cannot overtake alerts queued by another.
	sendMu sync.Mutex

	mu           sync.Mutex
	queue        []item
	nextSeq      uint64
	inFlight     uint64 // seq of the alert the retry loop is sending, 0 if none
	retrying     bool   // the retry loop runs
	failingSince time.Time
	lastCause    string
	outageDrops  int // dropped in the current outage
	stats        senderStats
	secrets      []string // substrings to redact: the URL and its parts
}

// New returns a Sender; its retry loop ends when ctx ends or Close is
// called, whichever is first.
func New(ctx context.Context, opts Options) *Sender {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = time.Second
	}
	if opts.MaxDelay < opts.RetryDelay {
		opts.MaxDelay = opts.RetryDelay
	}
	if opts.QueueSize < 1 {
		opts.QueueSize = 1
	}
	if opts.KeepBytes <= 0 {
		opts.KeepBytes = 200
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	s := &Sender{opts: opts, secrets: sensitiveParts(opts.URL)}
	s.ctx, s.cancel = context.WithCancel(ctx)
	return s
}

// sensitiveParts are the strings a receiver might echo back: the whole
// URL, its path (Slack/Discord tokens live there), its query and its
// user info.
func sensitiveParts(u *url.URL) []string {
	if u == nil {
		return nil
	}
	var parts []string
	add := func(s string) {
		if len(s) >= 4 {
			parts = append(parts, s)
		}
	}
	add(u.String())
	add(u.Host + u.EscapedPath())
	if u.Path != "/" {
		add(u.EscapedPath())
		add(u.Path)
	}
	add(u.RawQuery)
	// Tokens alone, as a receiver may name the one it does not know.
	for _, seg := range strings.Split(u.Path, "/") {
		if len(seg) >= 8 {
			add(seg)
		}
	}
	for _, vs := range u.Query() {
		for _, v := range vs {
			if len(v) >= 8 {
				add(v)
			}
		}
	}
	if u.User != nil {
		add(u.User.String())
	}
	return parts
}

// anyURL matches URLs in text a receiver sends back.
var anyURL = regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://[^\s"'<>]+`)

// Redact removes the receiver's URL and its parts, and any other URL,
// from s, and keeps at most max bytes of it.
func (s *Sender) Redact(text string, max int) string {
	return redact(text, s.secrets, max)
}

func redact(text string, secrets []string, max int) string {
	for _, p := range secrets {
		if p != "" {
			text = strings.ReplaceAll(text, p, "<redacted>")
		}
	}
	text = anyURL.ReplaceAllString(text, "<url>")
	if len(text) > max {
		text = text[:max] + "…"
	}
	return text
}

// Send delivers payload, or queues it if the receiver cannot take it now.
// It waits for at most one request (bounded by the client's timeout), and
// none while earlier alerts are queued: those go first.
func (s *Sender) Send(payload []byte) Result {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()

	s.mu.Lock()
	if s.retrying || len(s.queue) > 0 {
		n := s.enqueueLocked(payload)
		cause := s.lastCause
		s.mu.Unlock()
		return Result{Outcome: Queued, Waiting: n,
			Detail: "receiver failing: " + cause}
	}
	s.mu.Unlock()

	a := s.post(payload)
	switch {
	case a.ok():
		s.mu.Lock()
		s.stats.Sent++
		s.mu.Unlock()
		return Result{Outcome: Sent, Code: a.code, Response: a.response}
	case a.permanent():
		s.reject(a)
		return Result{Outcome: Rejected, Code: a.code, Detail: a.cause, Response: a.response}
	}
	s.mu.Lock()
	s.failingSince = time.Now()
	s.lastCause = a.cause
	n := s.enqueueLocked(payload)
	s.retrying = true
	s.mu.Unlock()
	s.opts.Logf("webhook delivery failed: %s; alert queued, retrying in %v", a.cause, s.opts.RetryDelay)
	s.wg.Add(1)
	go s.retryLoop(retryAfter(a, s.opts.RetryDelay))
	return Result{Outcome: Queued, Code: a.code, Waiting: n, Detail: a.cause, Response: a.response}
}

// enqueueLocked appends payload, dropping the oldest waiting alert if the
// queue is full, and returns the queue's length.
func (s *Sender) enqueueLocked(payload []byte) int {
	if len(s.queue) >= s.opts.QueueSize {
		// The oldest, unless the retry loop is sending it right now.
		victim := 0
		if s.queue[0].seq == s.inFlight && len(s.queue) > 1 {
			victim = 1
		}
		s.queue = append(s.queue[:victim], s.queue[victim+1:]...)
		s.stats.Dropped++
		s.outageDrops++
		if s.outageDrops == 1 {
			s.opts.Logf("webhook queue full (%d alerts): dropping the oldest waiting alerts until the receiver takes them again (they stay in this artifact's results)",
				s.opts.QueueSize)
		}
	}
	s.nextSeq++
	s.queue = append(s.queue, item{seq: s.nextSeq, payload: payload})
	s.stats.Waiting = len(s.queue)
	return len(s.queue)
}

func (s *Sender) reject(a attempt) {
	s.mu.Lock()
	s.stats.Rejected++
	s.mu.Unlock()
	s.opts.Logf("webhook receiver rejected an alert: %s%s; not retried (a retry would be refused too)",
		a.cause, ifNotEmpty("; response: ", a.response))
}

// retryLoop delivers the queue, oldest first, until it is empty or the
// sender ends.
func (s *Sender) retryLoop(wait time.Duration) {
	defer s.wg.Done()
	delay := wait
	attempts := 1
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-s.ctx.Done():
			s.abandon()
			return
		case <-timer.C:
		}

		s.mu.Lock()
		head := s.queue[0]
		s.inFlight = head.seq
		s.mu.Unlock()

		a := s.post(head.payload)
		s.mu.Lock()
		s.inFlight = 0
		s.stats.Retried++
		switch {
		case a.ok() || a.permanent():
			// A full queue of size 1 may have dropped it meanwhile.
			if len(s.queue) > 0 && s.queue[0].seq == head.seq {
				s.queue[0] = item{} // let the payload be collected
				s.queue = s.queue[1:]
			}
			if a.ok() {
				s.stats.Sent++
			}
			s.stats.Waiting = len(s.queue)
			if len(s.queue) == 0 {
				s.retrying = false
				outage := time.Since(s.failingSince).Round(time.Second)
				drops := s.outageDrops
				s.outageDrops = 0
				s.mu.Unlock()
				if a.permanent() {
					s.reject(a)
				}
				s.opts.Logf("webhook delivery resumed after %v of failures: every queued alert delivered%s",
					outage, ifPositive("; %d dropped because the queue was full", drops))
				return
			}
			s.mu.Unlock()
			if a.permanent() {
				s.reject(a)
			}
			// The receiver is back: the next one at once.
			attempts, delay = 0, 0
			timer.Reset(0)
		default:
			attempts++
			s.lastCause = a.cause
			waiting := len(s.queue)
			s.mu.Unlock()
			delay = retryAfter(a, min(max(2*delay, s.opts.RetryDelay), s.opts.MaxDelay))
			s.opts.Logf("webhook delivery failed again (attempt %d for the oldest alert): %s; %d alerts waiting, next attempt in %v",
				attempts, a.cause, waiting, delay)
			timer.Reset(delay)
		}
	}
}

// abandon reports what could not be delivered when the sender ended.
func (s *Sender) abandon() {
	s.mu.Lock()
	n := len(s.queue)
	since := s.failingSince
	s.queue = nil
	s.retrying = false
	s.mu.Unlock()
	if n > 0 {
		s.opts.Logf("webhook: %d queued alerts not delivered when the query ended (receiver failing since %s); they are in this artifact's results",
			n, since.UTC().Format(time.RFC3339))
	}
}

// counters returns the sender's counts so far.
func (s *Sender) counters() senderStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Close stops the retry loop and waits for it.
func (s *Sender) Close() {
	s.cancel()
	s.wg.Wait()
}

// attempt is the result of one request.
type attempt struct {
	code       int
	cause      string // why it failed, redacted
	response   string // start of the body, redacted
	retryAfter time.Duration
	err        bool // no HTTP answer
}

func (a attempt) ok() bool { return !a.err && a.code >= 200 && a.code < 300 }

// permanent failures are answers that a retry would get again: a 4xx
// other than timeout (408), too early (425) and too many requests (429).
// Redirects are followed by the client; one left over is permanent too.
func (a attempt) permanent() bool {
	if a.err || a.ok() {
		return false
	}
	switch a.code {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return false
	}
	return a.code < 500
}

func (s *Sender) post(payload []byte) attempt {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, s.opts.URL.String(), bytes.NewReader(payload))
	if err != nil {
		return attempt{err: true, cause: s.Redact(err.Error(), 200)}
	}
	for k, v := range s.opts.Header {
		req.Header[k] = v
	}
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return attempt{err: true, cause: s.describe(err)}
	}
	defer resp.Body.Close()
	// Read a little more than is kept: redaction works on whole URLs.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, int64(s.opts.KeepBytes)+4096))
	a := attempt{code: resp.StatusCode, response: s.Redact(string(body), s.opts.KeepBytes)}
	if !a.ok() {
		a.cause = fmt.Sprintf("HTTP %d", resp.StatusCode)
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
			a.retryAfter = time.Duration(secs) * time.Second
		}
	}
	return a
}

// describe says why a request got no answer without the URL: net/http
// wraps the cause in a *url.Error whose text starts with the URL.
func (s *Sender) describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
		if ue.Timeout() {
			return fmt.Sprintf("no answer within %v", s.opts.Client.Timeout)
		}
	}
	if errors.Is(err, io.EOF) {
		return "the receiver closed the connection without answering"
	}
	return "could not connect: " + s.Redact(err.Error(), 200)
}

// retryAfter honours a receiver's Retry-After when it asks for longer than
// our own delay (bounded by an hour: a bogus header must not stall us).
func retryAfter(a attempt, delay time.Duration) time.Duration {
	if a.retryAfter > delay {
		return min(a.retryAfter, time.Hour)
	}
	return delay
}

func ifNotEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

func ifPositive(format string, n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(format, n)
}
