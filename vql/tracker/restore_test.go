package tracker

import (
	"fmt"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/vql/collector"
)

// renderOffline is render plus the Offline mark and the ConnId.
func renderOffline(evs []Event) []string {
	var out []string
	for i, s := range render(evs) {
		if evs[i].Offline {
			s += " offline"
		}
		out = append(out, fmt.Sprintf("%s id=%d", s, evs[i].Conn.ID))
	}
	return out
}

// run1 is a tracker's life before a restart: baseline X, then Z and W
// opened, W closed (its remnant still in the table).
func run1(t *testing.T, backend string) ([]Saved, uint64) {
	t.Helper()
	x := "tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20 pid=100"
	z := "tcp 127.0.0.1:40001 127.0.0.1:80 ESTAB cookie=3 inode=30 pid=101"
	w := "tcp 127.0.0.1:40002 127.0.0.1:80 ESTAB cookie=4 inode=40 pid=102"
	wTW := "tcp 127.0.0.1:40002 127.0.0.1:80 TIME_WAIT cookie=4"
	if backend == "procfs" {
		x = "tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB inode=20 pid=100"
		z = "tcp 127.0.0.1:40001 127.0.0.1:80 ESTAB inode=30 pid=101"
		w = "tcp 127.0.0.1:40002 127.0.0.1:80 ESTAB inode=40 pid=102"
		wTW = "tcp 127.0.0.1:40002 127.0.0.1:80 TIME_WAIT"
	}
	tr := New(Options{})
	tr.Update(t0, snap(x))
	tr.Update(t0.Add(time.Second), snap(x, z, w))
	got := render(tr.Update(t0.Add(2*time.Second), snap(x, z, wTW)))
	if len(got) != 1 {
		t.Fatalf("run 1: %q", got)
	}
	return tr.Save(t0.Add(2*time.Second), SaveOptions{}), tr.NextID()
}

func TestTrackerRestore(t *testing.T) {
	// In run 2 (one minute later): X still open, Z closed while nobody
	// watched, W's remnant still there, Y opened while nobody watched.
	snaps := map[string][]collector.Socket{
		"netlink": snap(
			"tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20 pid=100",
			"tcp 127.0.0.1:40002 127.0.0.1:80 TIME_WAIT cookie=4",
			"tcp 127.0.0.1:40003 127.0.0.1:80 ESTAB cookie=5 inode=50 pid=103"),
		"procfs": snap(
			"tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB inode=20 pid=100",
			"tcp 127.0.0.1:40002 127.0.0.1:80 TIME_WAIT",
			"tcp 127.0.0.1:40003 127.0.0.1:80 ESTAB inode=50 pid=103"),
	}
	want := []string{
		"removed 40001 pid=101 ESTAB outbound dur=59s offline id=2",
		"added 40003 pid=103 ESTAB outbound offline id=4",
	}
	for _, from := range []string{"netlink", "procfs"} {
		for _, to := range []string{"netlink", "procfs"} {
			t.Run(from+" to "+to, func(t *testing.T) {
				saved, next := run1(t, from)
				if len(saved) != 3 || next != 3 {
					t.Fatalf("saved %d connections, next ID %d: %+v", len(saved), next, saved)
				}
				tr := New(Options{})
				now := t0.Add(time.Minute)
				got := renderOffline(tr.Resume(now, snaps[to], saved, RestoreOptions{NextID: next}))
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("first snapshot:\n got %q\nwant %q", got, want)
				}
				// Afterwards the tracker is live again: X ends, not offline,
				// with its duration from run 1.
				got = renderOffline(tr.Update(now.Add(time.Second), snap()))
				want2 := []string{"removed 40000 pid=100 ESTAB outbound dur=1m1s id=1",
					"removed 40003 pid=103 ESTAB outbound dur=1s id=4"}
				if fmt.Sprint(got) != fmt.Sprint(want2) {
					t.Errorf("second snapshot:\n got %q\nwant %q", got, want2)
				}
			})
		}
	}
}

func TestTrackerRestoreCases(t *testing.T) {
	const (
		x   = "tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20 pid=100"
		xTW = "tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT cookie=2"
	)
	open := func(desc string, id uint64) Saved {
		s := sock(desc)
		return Saved{ID: id, Socket: s, Pid: s.Pid, Direction: Outbound, FirstSeen: t0}
	}
	closed := func(desc string) Saved {
		s := sock(desc)
		return Saved{Socket: s, Pid: -1, Direction: Outbound, FirstSeen: t0, Closed: true}
	}
	now := t0.Add(10 * time.Second)
	cases := []struct {
		name      string
		saved     []Saved
		covered   func(*collector.Socket) bool
		otherBoot bool
		opts      Options
		ticks     [][]collector.Socket
		want      [][]string
	}{{
		name:  "closed while down, remnant there: removed once",
		saved: []Saved{open(x, 1)},
		ticks: [][]collector.Socket{snap(xTW), snap(xTW), snap()},
		want:  [][]string{{"removed 40000 pid=100 TIME_WAIT outbound dur=10s offline id=1"}, nil, nil},
	}, {
		name:  "remnant of a connection already reported removed: silent",
		saved: []Saved{closed(xTW)},
		ticks: [][]collector.Socket{snap(xTW), snap()},
		want:  [][]string{nil, nil},
	}, {
		name:  "remnant whose tuple a new socket reuses: the new one is added",
		saved: []Saved{closed("tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT")},
		ticks: [][]collector.Socket{snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB inode=70 pid=105")},
		want:  [][]string{{"added 40000 pid=105 ESTAB outbound offline id=1"}},
	}, {
		name:  "opened and closed while down, remnant there: added with pid -1",
		ticks: [][]collector.Socket{snap(xTW)},
		want:  [][]string{{"added 40000 pid=-1 TIME_WAIT unknown offline id=1"}},
	}, {
		name:  "same cookie wins over another's inode",
		saved: []Saved{open(x, 7)},
		ticks: [][]collector.Socket{snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=9 inode=20 pid=100")},
		want: [][]string{{"removed 40000 pid=100 ESTAB outbound dur=10s offline id=7",
			"added 40000 pid=100 ESTAB outbound offline id=8"}},
	}, {
		name:  "inode reused by another tuple: not the same socket",
		saved: []Saved{open("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB inode=20 pid=100", 1)},
		ticks: [][]collector.Socket{snap("tcp 127.0.0.1:40009 127.0.0.1:80 ESTAB inode=20 pid=100")},
		want: [][]string{{"removed 40000 pid=100 ESTAB outbound dur=10s offline id=1",
			"added 40009 pid=100 ESTAB outbound offline id=2"}},
	}, {
		name:  "windows: tuple and owner",
		saved: []Saved{open("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB pid=100 windows", 1)},
		ticks: [][]collector.Socket{snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB pid=100 windows"),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB pid=101 windows")},
		want: [][]string{nil, {"removed 40000 pid=100 ESTAB outbound dur=11s id=1",
			"added 40000 pid=101 ESTAB outbound id=2"}},
	}, {
		name:    "kinds not watched before are baseline",
		saved:   []Saved{open(x, 1)},
		covered: func(s *collector.Socket) bool { return s.IsTCP() },
		ticks: [][]collector.Socket{snap(x, "udp 127.0.0.1:5353 0.0.0.0:0 CLOSE cookie=4 inode=40 pid=5",
			"tcp 127.0.0.1:40001 127.0.0.1:80 ESTAB cookie=3 inode=30 pid=101")},
		want: [][]string{{"added 40001 pid=101 ESTAB outbound offline id=3"}},
	}, {
		name:  "emit_existing does not report what the state has",
		opts:  Options{EmitExisting: true},
		saved: []Saved{open(x, 1)},
		ticks: [][]collector.Socket{snap(x)},
		want:  [][]string{nil},
	}, {
		name: "held for its owner: added later, still offline",
		opts: Options{HoldTicks: 1},
		ticks: [][]collector.Socket{snap("tcp 127.0.0.1:80 127.0.0.1:40000 ESTAB cookie=3 inode=30"),
			snap("tcp 127.0.0.1:80 127.0.0.1:40000 ESTAB cookie=3 inode=30 pid=1")},
		want: [][]string{nil, {"added 80 pid=1 ESTAB outbound offline id=1"}},
	}, {
		name:      "another boot: nothing matches, even an equal cookie",
		otherBoot: true,
		saved:     []Saved{open(x, 1), closed("tcp 127.0.0.1:40001 127.0.0.1:80 TIME_WAIT cookie=3")},
		ticks:     [][]collector.Socket{snap(x, "tcp 127.0.0.1:40001 127.0.0.1:80 TIME_WAIT cookie=3")},
		want: [][]string{{"removed 40000 pid=100 ESTAB outbound dur=10s offline id=1",
			"added 40000 pid=100 ESTAB outbound offline id=2",
			"added 40001 pid=-1 TIME_WAIT unknown offline id=3"}},
	}, {
		name:  "saved open though its socket had closed (removed row not delivered): removed now",
		saved: []Saved{{ID: 1, Socket: sock(xTW), Pid: 100, Direction: Outbound, FirstSeen: t0}},
		ticks: [][]collector.Socket{snap(xTW)},
		want:  [][]string{{"removed 40000 pid=100 TIME_WAIT outbound dur=10s offline id=1"}},
	}, {
		name:  "empty state: everything is new",
		ticks: [][]collector.Socket{snap(x)},
		want:  [][]string{{"added 40000 pid=100 ESTAB outbound offline id=1"}},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(tc.opts)
			for i, s := range tc.ticks {
				at := now.Add(time.Duration(i) * time.Second)
				var evs []Event
				if i == 0 {
					evs = tr.Resume(at, s, tc.saved, RestoreOptions{Covered: tc.covered, OtherBoot: tc.otherBoot})
				} else {
					evs = tr.Update(at, s)
				}
				got := renderOffline(evs)
				if fmt.Sprint(got) != fmt.Sprint(tc.want[i]) {
					t.Errorf("tick %d:\n got %q\nwant %q", i, got, tc.want[i])
				}
			}
		})
	}
}

// Save keeps what was reported and is still in the table, in ID order, and
// not a socket still held for its owner.
func TestTrackerSave(t *testing.T) {
	tr := New(Options{HoldTicks: 3})
	tr.Update(t0, snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20 pid=100"))
	tr.Update(t0.Add(time.Second), snap(
		"tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT cookie=2",
		"tcp 127.0.0.1:40001 127.0.0.1:80 ESTAB cookie=3 inode=30 pid=101",
		"tcp 127.0.0.1:40002 127.0.0.1:80 ESTAB cookie=4 inode=40"))
	var got []string
	for _, s := range tr.Save(t0.Add(time.Second), SaveOptions{}) {
		got = append(got, fmt.Sprintf("%d %d closed=%v", s.ID, s.Socket.Local.Port(), s.Closed))
	}
	want := []string{"1 40000 closed=true", "2 40001 closed=false"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q want %q", got, want)
	}
}
