// Package webhook is a local receiver for the webhooks of
// Server.Alerts.TrackNetworkConnections: it keeps every alert it receives,
// lets a test wait for one, and formats them for a terminal. `make run`
// prints each alert with it; the end-to-end test asserts on them;
// cmd/webhook runs it on its own.
//
// It understands the artifact's `json` format (the whole event) and shows
// the text of the `slack` ({"text"}), `discord` ({"content"}) and `teams`
// (Adaptive Card) formats.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Endpoint is an address and port as the artifact sends them.
type Endpoint struct {
	IP   string `json:"IP"`
	Port int    `json:"Port"`
}

func (e Endpoint) String() string {
	if strings.Contains(e.IP, ":") {
		return fmt.Sprintf("[%s]:%d", e.IP, e.Port)
	}
	return fmt.Sprintf("%s:%d", e.IP, e.Port)
}

// Process is the process that owned the connection.
type Process struct {
	Pid         int    `json:"Pid"`
	Name        string `json:"Name"`
	Label       string `json:"Label"`
	Path        string `json:"Path"`
	CommandLine string `json:"CommandLine"`
	Username    string `json:"Username"`
	Ppid        int    `json:"Ppid"`
}

// IOC is the entry of the IOC list that matched.
type IOC struct {
	Network     string `json:"Network"`
	Description string `json:"Description"`
}

// Alert is one webhook delivery. The fields are those of the artifact's
// json format; for the other formats only Text (and Raw) are set.
type Alert struct {
	Source     string   `json:"Source"`
	Artifact   string   `json:"Artifact"`
	Type       string   `json:"Type"` // connection or summary
	Timestamp  string   `json:"Timestamp"`
	ClientId   string   `json:"ClientId"`
	Fqdn       string   `json:"Fqdn"`
	Labels     []string `json:"Labels"`
	Rule       string   `json:"Rule"`
	Severity   string   `json:"Severity"`
	Diff       string   `json:"Diff"`
	Direction  string   `json:"Direction"`
	Protocol   string   `json:"Protocol"`
	Status     string   `json:"Status"`
	Laddr      Endpoint `json:"Laddr"`
	Raddr      Endpoint `json:"Raddr"`
	Process    Process  `json:"Process"`
	IOC        *IOC     `json:"IOC"`
	Duration   any      `json:"Duration"`
	ConnId     any      `json:"ConnId"`
	Suppressed any      `json:"Suppressed"`
	Message    string   `json:"Message"`

	// Text of a slack/discord/teams payload (or the Message of a json one).
	Text string `json:"-"`
	// Raw is the body as received.
	Raw []byte `json:"-"`
	// Received is when the receiver got it; Path the URL path it was sent to.
	Received time.Time `json:"-"`
	Path     string    `json:"-"`
}

// Parse decodes a webhook body of any of the artifact's formats.
func Parse(body []byte) (Alert, error) {
	var a Alert
	a.Raw = append([]byte(nil), body...)
	var generic map[string]any
	if err := json.Unmarshal(body, &generic); err != nil {
		return a, fmt.Errorf("webhook body is not a JSON object: %w", err)
	}
	switch {
	case generic["Artifact"] != nil || generic["ClientId"] != nil:
		if err := json.Unmarshal(body, &a); err != nil {
			return a, err
		}
		a.Text = a.Message
	case generic["text"] != nil:
		a.Text, _ = generic["text"].(string)
	case generic["content"] != nil:
		a.Text, _ = generic["content"].(string)
	default:
		a.Text = teamsText(generic)
	}
	return a, nil
}

// teamsText joins the TextBlocks of an Adaptive Card message.
func teamsText(m map[string]any) string {
	var parts []string
	atts, _ := m["attachments"].([]any)
	for _, att := range atts {
		content, _ := att.(map[string]any)["content"].(map[string]any)
		body, _ := content["body"].([]any)
		for _, b := range body {
			bm, _ := b.(map[string]any)
			switch bm["type"] {
			case "TextBlock":
				if t, ok := bm["text"].(string); ok {
					parts = append(parts, t)
				}
			case "RichTextBlock":
				// The artifact's cards: one line of TextRuns per block.
				var line strings.Builder
				inlines, _ := bm["inlines"].([]any)
				for _, in := range inlines {
					if t, ok := in.(map[string]any)["text"].(string); ok {
						line.WriteString(t)
					}
				}
				parts = append(parts, line.String())
			}
		}
	}
	return strings.Join(parts, "\n")
}

// Receiver is an HTTP server on loopback that records webhooks.
type Receiver struct {
	// OnAlert, if set, is called for each alert (from the HTTP handler).
	OnAlert func(Alert)

	mu      sync.Mutex
	alerts  []Alert
	changed chan struct{}
	srv     *http.Server
	ln      net.Listener
	done    chan struct{}
	addr    string // the address bound, for Restart

	// Fault injection (SetFault): answer with failStatus instead of
	// taking the alert, or take it only after delay.
	failStatus int
	delay      time.Duration
	refused    int
}

// Listen starts a receiver on addr (e.g. "127.0.0.1:0"). Only loopback
// addresses are accepted: it is a test and demo tool.
func Listen(addr string) (*Receiver, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("webhook receiver: %q is not a loopback address", host)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Receiver{changed: make(chan struct{})}
	r.serve(ln)
	return r, nil
}

func (r *Receiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	r.mu.Lock()
	r.ln, r.srv, r.done, r.addr = ln, srv, done, ln.Addr().String()
	r.mu.Unlock()
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
}

// Restart listens again on the address of a receiver that was closed
// (the "receiver is back" of an outage test); the alerts are kept.
func (r *Receiver) Restart() error {
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old socket may linger for a moment
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			r.serve(ln)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// SetFault makes the receiver answer every alert with status (e.g. 500)
// without taking it, or, with status 0, take each alert only after delay
// (a slow receiver: the alert counts as received when the request
// arrived, as a real receiver would post it even if the sender gave up
// waiting). SetFault(0, 0) restores normal service.
func (r *Receiver) SetFault(status int, delay time.Duration) {
	r.mu.Lock()
	r.failStatus, r.delay = status, delay
	r.mu.Unlock()
}

// Refused counts the alerts answered with a fault status.
func (r *Receiver) Refused() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused
}

// URL to give the artifact's WebHook parameter.
func (r *Receiver) URL() string {
	return fmt.Sprintf("http://%s/webhook", r.addr)
}

// Addr is the address the receiver listens on.
func (r *Receiver) Addr() *net.TCPAddr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ln.Addr().(*net.TCPAddr)
}

// Close stops the receiver: its port refuses connections until Restart.
func (r *Receiver) Close() error {
	r.mu.Lock()
	srv, done := r.srv, r.done
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close() // a slow request still running: cut it
	}
	<-done
	return err
}

// ServeHTTP records a POSTed alert.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST an alert here", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a, err := Parse(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.Received = time.Now()
	a.Path = req.URL.Path

	r.mu.Lock()
	status, delay := r.failStatus, r.delay
	if status != 0 {
		r.refused++
		r.mu.Unlock()
		http.Error(w, "receiver failing (test fault)", status)
		return
	}
	r.alerts = append(r.alerts, a)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()

	if r.OnAlert != nil {
		r.OnAlert(a)
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true}`)
}

// Alerts returns a copy of every alert received so far.
func (r *Receiver) Alerts() []Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Alert(nil), r.alerts...)
}

// Matching returns the alerts received so far for which match is true.
func (r *Receiver) Matching(match func(Alert) bool) []Alert {
	var out []Alert
	for _, a := range r.Alerts() {
		if match(a) {
			out = append(out, a)
		}
	}
	return out
}

// ErrTimeout is returned by Wait when no matching alert arrived in time.
var ErrTimeout = errors.New("no matching webhook received")

// Wait returns the first alert (already received or arriving before ctx
// ends) for which match is true.
func (r *Receiver) Wait(ctx context.Context, match func(Alert) bool) (Alert, error) {
	for {
		r.mu.Lock()
		for _, a := range r.alerts {
			if match(a) {
				r.mu.Unlock()
				return a, nil
			}
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return Alert{}, fmt.Errorf("%w (%v)", ErrTimeout, ctx.Err())
		case <-changed:
		}
	}
}
