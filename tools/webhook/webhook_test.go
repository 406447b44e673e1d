package webhook

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A json-format body as Server.Alerts.TrackNetworkConnections sends it.
const jsonBody = `{"Source":"Velociraptor netwatch","Artifact":"Server.Alerts.TrackNetworkConnections",
"Type":"connection","Timestamp":"2026-11-27T06:53:04Z","ClientId":"C.1","Fqdn":"host.example",
"Labels":["IR"],"Diff":"added","Direction":"outbound","Protocol":"TCP","Status":"ESTAB",
"Laddr":{"IP":"127.0.0.1","Port":50910},"Raddr":{"IP":"::1","Port":4444},
"Process":{"Pid":42,"Name":"bash","Label":"bash","Path":"/usr/bin/bash","CommandLine":"bash -c x","Username":"root","Ppid":1},
"IOC":{"Network":"::1/128","Description":"demo C2"},"FirstSeen":null,"Duration":null,"ConnId":7,
"Suppressed":null,"Message":"host.example (C.1): bash (pid 42) opened ..."}`

func TestParseFormats(t *testing.T) {
	for _, tc := range []struct {
		name, body, text string
	}{
		{"json", jsonBody, "host.example (C.1): bash (pid 42) opened ..."},
		{"slack", `{"text":"alert one"}`, "alert one"},
		{"discord", `{"content":"alert two"}`, "alert two"},
		{"teams", `{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive",
			"content":{"type":"AdaptiveCard","body":[{"type":"TextBlock","text":"title"},
			{"type":"TextBlock","text":"alert three"},{"type":"FactSet","facts":[]}]}}]}`, "title\nalert three"},
		{"teams rich text", `{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive",
			"content":{"type":"AdaptiveCard","body":[{"type":"RichTextBlock","inlines":[{"type":"TextRun","text":"title"}]},
			{"type":"RichTextBlock","inlines":[{"type":"TextRun","text":"Client: "},{"type":"TextRun","text":"h"}]}]}}]}`,
			"title\nClient: h"},
	} {
		a, err := Parse([]byte(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if a.Text != tc.text {
			t.Errorf("%s: text %q, want %q", tc.name, a.Text, tc.text)
		}
	}
	if _, err := Parse([]byte("not json")); err == nil {
		t.Error("a body that is not JSON parsed")
	}
}

func TestFormatNamesTheFacts(t *testing.T) {
	a, err := Parse([]byte(jsonBody))
	if err != nil {
		t.Fatal(err)
	}
	out := Format(a, false)
	for _, want := range []string{"host.example (C.1)", "bash", "pid 42", "user root", "/usr/bin/bash",
		"127.0.0.1:50910 -> [::1]:4444", "::1/128", "demo C2", "outbound"} {
		if !strings.Contains(out, want) {
			t.Errorf("formatted alert lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\033[") {
		t.Error("color codes without color")
	}
}

func TestReceiverRecordsAndWaits(t *testing.T) {
	if _, err := Listen("192.0.2.1:0"); err == nil {
		t.Fatal("a non-loopback address was accepted")
	}
	r, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var seen []Alert
	r.OnAlert = func(a Alert) { seen = append(seen, a) }

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		time.Sleep(50 * time.Millisecond)
		resp, err := http.Post(r.URL(), "application/json", bytes.NewBufferString(jsonBody))
		if err == nil {
			resp.Body.Close()
		}
	}()
	a, err := r.Wait(ctx, func(a Alert) bool { return a.Process.Pid == 42 })
	if err != nil {
		t.Fatal(err)
	}
	if a.Raddr.Port != 4444 || a.Fqdn != "host.example" || a.IOC.Description != "demo C2" || a.Path != "/webhook" {
		t.Errorf("alert %+v", a)
	}
	if len(r.Alerts()) != 1 || len(seen) != 1 {
		t.Errorf("%d alerts recorded, %d seen by OnAlert; want 1", len(r.Alerts()), len(seen))
	}

	// Not JSON: refused, not recorded.
	resp, err := http.Post(r.URL(), "application/json", bytes.NewBufferString("nope"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || len(r.Alerts()) != 1 {
		t.Errorf("bad body: HTTP %d, %d alerts", resp.StatusCode, len(r.Alerts()))
	}

	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := r.Wait(short, func(a Alert) bool { return a.Process.Pid == 1 }); err == nil {
		t.Error("Wait returned an alert that never came")
	}
}

func TestReceiverFaultsAndRestart(t *testing.T) {
	r, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	post := func() (int, error) {
		c := &http.Client{Timeout: 300 * time.Millisecond}
		resp, err := c.Post(r.URL(), "application/json", bytes.NewBufferString(jsonBody))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	r.SetFault(http.StatusInternalServerError, 0)
	if code, err := post(); code != 500 || err != nil || len(r.Alerts()) != 0 || r.Refused() != 1 {
		t.Errorf("failing: HTTP %d, %v, %d alerts, %d refused", code, err, len(r.Alerts()), r.Refused())
	}
	r.SetFault(0, time.Second)
	if _, err := post(); err == nil || len(r.Alerts()) != 1 {
		t.Errorf("slow: err %v (want a client timeout), %d alerts (want 1: taken on arrival)", err, len(r.Alerts()))
	}
	r.SetFault(0, 0)

	url := r.URL()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := post(); err == nil {
		t.Error("a closed receiver answered")
	}
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	if code, err := post(); code != 200 || err != nil || r.URL() != url || len(r.Alerts()) != 2 {
		t.Errorf("restarted: HTTP %d, %v, URL %s (was %s), %d alerts", code, err, r.URL(), url, len(r.Alerts()))
	}
}
