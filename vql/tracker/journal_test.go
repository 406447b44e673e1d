package tracker

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/vql/collector"
)

// renderSaved makes a state comparable: "2 40001 closed".
func renderSaved(saved []Saved) []string {
	var out []string
	for _, s := range saved {
		st := "open"
		if s.Closed {
			st = "closed"
		}
		out = append(out, fmt.Sprintf("%d %d %s", s.ID, s.Socket.Local.Port(), st))
	}
	return out
}

// journalRun is a tracker's life that Save judges: A (ID 1) is baseline;
// at 1 s B (2), C (3) and D (4) are added; at 2 s A is gone (removed, no
// longer in the table) and B and D are closed (removed, their remnants
// still there). After each step, journal is told its rows, as a caller
// would be before its next call.
func journalRun(t *testing.T, journal func(tr *Tracker, step int, rows []Event)) *Tracker {
	t.Helper()
	const (
		a   = "tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20 pid=100"
		b   = "tcp 127.0.0.1:40001 127.0.0.1:80 ESTAB cookie=3 inode=30 pid=101"
		bTW = "tcp 127.0.0.1:40001 127.0.0.1:80 TIME_WAIT cookie=3"
		c   = "tcp 127.0.0.1:40002 127.0.0.1:80 ESTAB cookie=4 inode=40 pid=102"
		d   = "tcp 127.0.0.1:40003 127.0.0.1:80 ESTAB cookie=5 inode=50 pid=103"
		dTW = "tcp 127.0.0.1:40003 127.0.0.1:80 TIME_WAIT cookie=5"
	)
	tr := New(Options{})
	tr.Update(t0, snap(a))
	for i, sn := range [][]collector.Socket{snap(a, b, c, d), snap(bTW, c, dTW)} {
		step := i + 1
		rows := tr.Update(t0.Add(time.Duration(step)*time.Second), sn)
		if len(rows) != 3 {
			t.Fatalf("at %d s: %q", step, render(rows))
		}
		journal(tr, step, rows)
	}
	return tr
}

// deliverAll delivers each step's rows at its time.
func deliverAll(tr *Tracker, step int, rows []Event) {
	tr.Delivered(sec(float64(step)), rows...)
}

func sec(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func TestTrackerJournal(t *testing.T) {
	const lag = 30 * time.Second
	cases := []struct {
		name    string
		journal func(tr *Tracker, step int, rows []Event)
		at      time.Time // of the Save
		opts    SaveOptions
		want    []string
		sent    int // rows the journal still holds after the Save
	}{{
		name:    "rows filtered out (neither delivered nor refused) count as reported",
		journal: func(*Tracker, int, []Event) {},
		at:      sec(2), opts: SaveOptions{Lag: lag},
		want: []string{"2 40001 closed", "3 40002 open", "4 40003 closed"},
	}, {
		name:    "delivered, and the lag has passed: reported, and forgotten",
		journal: deliverAll,
		at:      sec(32), opts: SaveOptions{Lag: lag},
		want: []string{"2 40001 closed", "3 40002 open", "4 40003 closed"},
	}, {
		name:    "delivered within the lag: an Added not safe is left out, a Removed not safe is saved open",
		journal: deliverAll,
		// B and D: both rows not safe, so left out. A: no longer in the
		// table, saved open from the journal.
		at: sec(20), opts: SaveOptions{Lag: lag},
		want: []string{"1 40000 open"},
		sent: 6,
	}, {
		name:    "the lag passes row by row",
		journal: deliverAll,
		// The adds of 1 s are safe (31.5 - 1 >= 30), the ends of 2 s not.
		at: sec(31.5), opts: SaveOptions{Lag: lag},
		want: []string{"1 40000 open", "2 40001 open", "3 40002 open", "4 40003 open"},
		sent: 3,
	}, {
		name:    "lag 0 trusts a row at once",
		journal: deliverAll,
		at:      sec(2), opts: SaveOptions{},
		want: []string{"2 40001 closed", "3 40002 open", "4 40003 closed"},
	}, {
		name: "undelivered: never safe, however long ago",
		journal: func(tr *Tracker, step int, rows []Event) {
			if step == 1 {
				tr.Delivered(sec(1), rows...)
				return
			}
			tr.Delivered(sec(2), rows[:1]...) // A's end reached the output
			tr.Undelivered(rows[1:]...)       // B's and D's did not
		},
		at: sec(3600), opts: SaveOptions{Lag: lag},
		want: []string{"2 40001 open", "3 40002 open", "4 40003 open"},
	}, {
		name: "an undelivered Added: left out",
		journal: func(tr *Tracker, step int, rows []Event) {
			if step == 1 {
				tr.Undelivered(rows[1]) // C
			}
		},
		at: sec(3600), opts: SaveOptions{Lag: lag},
		want: []string{"2 40001 closed", "4 40003 closed"},
	}, {
		name:    "remnants capped: the oldest left out",
		journal: func(*Tracker, int, []Event) {},
		at:      sec(2), opts: SaveOptions{Lag: lag, MaxRemnants: 1},
		want: []string{"3 40002 open", "4 40003 closed"},
	}, {
		name: "remnants capped after the journal: one saved open is not a remnant",
		journal: func(tr *Tracker, step int, rows []Event) {
			if step == 2 {
				tr.Delivered(sec(2), rows...)
			}
		},
		at: sec(3), opts: SaveOptions{Lag: lag, MaxRemnants: 1},
		want: []string{"1 40000 open", "2 40001 open", "3 40002 open", "4 40003 open"},
		sent: 3,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := journalRun(t, tc.journal)
			if got := renderSaved(tr.Save(tc.at, tc.opts)); !slices.Equal(got, tc.want) {
				t.Errorf("saved %q, want %q", got, tc.want)
			}
			if n := len(tr.journal.sent); n != tc.sent {
				t.Errorf("the journal holds %d delivered rows after the save, want %d", n, tc.sent)
			}
			// Saving changes nothing but the journal: the tracker goes
			// on as before.
			if got := render(tr.Update(sec(2.5), snap(
				"tcp 127.0.0.1:40002 127.0.0.1:80 ESTAB cookie=4 inode=40 pid=102"))); len(got) != 0 {
				t.Errorf("after the save: %q", got)
			}
		})
	}
}

// A state saved with rows not yet safe is resumed as if they had not
// happened: each is reported again, Offline, and nothing else is.
func TestTrackerJournalResumed(t *testing.T) {
	tr := journalRun(t, deliverAll)
	saved := tr.Save(t0.Add(2*time.Second), SaveOptions{Lag: 30 * time.Second})

	// The host as it was at 2 s, seen by a tracker restarted at 3 s.
	next := New(Options{})
	got := renderOffline(next.Resume(t0.Add(3*time.Second), snap(
		"tcp 127.0.0.1:40001 127.0.0.1:80 TIME_WAIT cookie=3",
		"tcp 127.0.0.1:40002 127.0.0.1:80 ESTAB cookie=4 inode=40 pid=102",
		"tcp 127.0.0.1:40003 127.0.0.1:80 TIME_WAIT cookie=5"),
		saved, RestoreOptions{NextID: tr.NextID()}))
	// A's end again with its ID; B, C, D again as new connections (the
	// closed ones first seen closed: Pid -1).
	want := []string{
		"removed 40000 pid=100 ESTAB outbound dur=3s offline id=1",
		"added 40001 pid=-1 TIME_WAIT unknown offline id=5",
		"added 40002 pid=102 ESTAB outbound offline id=6",
		"added 40003 pid=-1 TIME_WAIT unknown offline id=7",
	}
	if !slices.Equal(got, want) {
		t.Errorf("resumed:\n got %q\nwant %q", got, want)
	}
}

// Kernel events: a 1 ms connection's Added and Removed come in one batch;
// until both rows are safe, the state does not have it. Once they are, it
// has it closed, so that a restart before the next snapshot does not take
// its TIME_WAIT remnant for a new connection.
func TestTrackerJournalEvents(t *testing.T) {
	tr := New(Options{Events: true, Netns: 1})
	tr.Update(t0, snap())
	evs := []SockEvent{
		kev("CLOSE>SENT 127.0.0.1:0 127.0.0.1:80 cookie=2 pid=100 owner"),
		kev("SENT>ESTAB 127.0.0.1:40000 127.0.0.1:80 cookie=2 pid=999"),
		kev("ESTAB>FIN_WAIT1 127.0.0.1:40000 127.0.0.1:80 cookie=2 pid=100 owner"),
		kev("FIN_WAIT2>CLOSE 127.0.0.1:0 127.0.0.1:80 cookie=2 pid=999"),
	}
	rows := tr.Apply(t0.Add(time.Millisecond), evs)
	if len(rows) != 2 {
		t.Fatalf("rows %q", render(rows))
	}
	tr.Delivered(t0.Add(time.Millisecond), rows...)
	if got := tr.Save(t0.Add(time.Second), SaveOptions{Lag: time.Minute}); len(got) != 0 {
		t.Errorf("within the lag: saved %q", renderSaved(got))
	}
	saved := tr.Save(t0.Add(2*time.Minute), SaveOptions{Lag: time.Minute})
	if got := renderSaved(saved); !slices.Equal(got, []string{"1 40000 closed"}) {
		t.Errorf("after the lag: saved %q, want the closed connection", got)
	}
	if len(tr.journal.sent) != 0 {
		t.Errorf("the journal still holds %d rows", len(tr.journal.sent))
	}
	tr = New(Options{Events: true, Netns: 1})
	remnant := snap("tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT cookie=2")
	if got := renderOffline(tr.Resume(t0.Add(2*time.Minute), remnant, saved, RestoreOptions{NextID: 1})); got != nil {
		t.Errorf("resumed with its remnant: %q, want nothing", got)
	}
}
