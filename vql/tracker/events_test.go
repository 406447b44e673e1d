package tracker

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/vql/collector"
)

// kev builds a kernel event: "OLD>NEW local remote cookie=N pid=N
// [owner] [accept] [netns=N]". The pid of an event that is not the
// owner's is the unrelated task the kernel happened to run.
func kev(desc string) SockEvent {
	f := strings.Fields(desc)
	old, nw, _ := strings.Cut(f[0], ">")
	s := sock(strings.Join(append([]string{"tcp", f[1], f[2], nw}, f[3:]...), " "))
	o := sock("tcp 0.0.0.0:0 0.0.0.0:0 " + old)
	ev := SockEvent{Socket: s, Old: o.State, Netns: 1}
	for _, kv := range f[3:] {
		name, val, _ := strings.Cut(kv, "=")
		switch name {
		case "owner":
			ev.Owner = true
		case "accept":
			ev.Owner, ev.Accepted = true, true
		case "netns":
			fmt.Sscan(val, &ev.Netns)
		}
	}
	if !ev.Owner {
		ev.Socket.Pid = -1
	}
	return ev
}

// applyAt applies the events descs describe (see kev), which happened late
// before now, at now.
func applyAt(tr *Tracker, now time.Time, late time.Duration, descs []string) []Event {
	evs := make([]SockEvent, len(descs))
	for j, d := range descs {
		evs[j] = kev(d)
		evs[j].Time = now.Add(-late)
	}
	return tr.Apply(now, evs)
}

type step struct {
	at    time.Duration
	snap  []collector.Socket // a snapshot, or
	evs   []string           // a batch of kernel events, or
	flush bool               // a Flush
	late  time.Duration      // the events happened this long before they are applied
	want  []string
}

func TestApply(t *testing.T) {
	const (
		connect  = "CLOSE>SENT 127.0.0.1:0 127.0.0.1:80 cookie=2 pid=100 owner"
		synAck   = "SENT>ESTAB 127.0.0.1:40000 127.0.0.1:80 cookie=2 pid=999"
		cliClose = "ESTAB>FIN_WAIT1 127.0.0.1:40000 127.0.0.1:80 cookie=2 pid=100 owner"
		cliEnd   = "FIN_WAIT2>CLOSE 127.0.0.1:0 127.0.0.1:80 cookie=2 pid=999"
		child    = "LISTEN>SYN_RECV 127.0.0.1:80 127.0.0.1:40000 cookie=3 pid=100"
		childEst = "SYN_RECV>ESTAB 127.0.0.1:80 127.0.0.1:40000 cookie=3 pid=100"
		accepted = "ESTAB>ESTAB 127.0.0.1:80 127.0.0.1:40000 cookie=3 pid=1 accept"
		srvWait  = "ESTAB>CLOSE_WAIT 127.0.0.1:80 127.0.0.1:40000 cookie=3 pid=100"
		srvClose = "CLOSE_WAIT>LAST_ACK 127.0.0.1:80 127.0.0.1:40000 cookie=3 pid=1 owner"
		srvEnd   = "LAST_ACK>CLOSE 127.0.0.1:0 127.0.0.1:40000 cookie=3 pid=100"
		clientTW = "tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT cookie=2"
	)
	cases := []struct {
		name  string
		steps []step
	}{{
		name: "1 ms outbound: the connecting process, once the port is known; its remnant is not new",
		steps: []step{
			{snap: snap()},
			{at: 1, evs: []string{connect}},
			{at: 2, evs: []string{synAck, cliClose, cliEnd}, want: []string{
				"added 40000 pid=100 ESTAB outbound", "removed 40000 pid=100 FIN_WAIT1 outbound dur=1ns"}},
			{at: 3, snap: snap(clientTW)},
			{at: 4, snap: snap()},
		},
	}, {
		name: "inbound: the accepting process, not the task the handshake ran on",
		steps: []step{
			{snap: snap()},
			{at: 1, evs: []string{child, childEst, accepted}, want: []string{"added 80 pid=1 ESTAB inbound"}},
			{at: 2, evs: []string{srvWait, srvClose, srvEnd}, want: []string{"removed 80 pid=1 LAST_ACK inbound dur=1ns"}},
		},
	}, {
		name: "a watcher 3 s behind its events still waits for the accept in its queue",
		steps: []step{
			{snap: snap()},
			{at: 3 * time.Second, late: 3*time.Second - 1, evs: []string{child, childEst}},
			{at: 3*time.Second + 1, late: 3*time.Second - 1, evs: []string{accepted}, want: []string{"added 80 pid=1 ESTAB inbound"}},
		},
	}, {
		name: "a remnant a snapshot sees before its events: the events, once applied, name the owner",
		steps: []step{
			{snap: snap()},
			{at: 1, snap: snap(clientTW)},
			{at: 2, late: 2, evs: []string{connect, synAck, cliClose, cliEnd}, want: []string{
				"added 40000 pid=100 ESTAB outbound", "removed 40000 pid=100 FIN_WAIT1 outbound dur=0s"}},
			{at: 3, snap: snap(clientTW)},
		},
	}, {
		name: "a remnant whose records were lost: Pid -1 at the next snapshot",
		steps: []step{
			{snap: snap()},
			{at: 1, snap: snap(clientTW)},
			{at: 2, snap: snap(clientTW), want: []string{"added 40000 pid=-1 TIME_WAIT unknown"}},
			{at: 3, snap: snap()},
		},
	}, {
		name: "a remnant whose records were lost, gone by the next snapshot: still reported",
		steps: []step{
			{snap: snap()},
			{at: 1, snap: snap(clientTW)},
			{at: 2, snap: snap(), want: []string{"added 40000 pid=-1 TIME_WAIT unknown", "removed 40000 pid=-1 TIME_WAIT unknown dur=1ns"}},
		},
	}, {
		name: "never accepted: reported after EventHold with Pid -1",
		steps: []step{
			{snap: snap()},
			{at: 1, evs: []string{child, childEst}},
			{at: time.Second, flush: true},
			{at: 3 * time.Second, flush: true, want: []string{"added 80 pid=-1 ESTAB inbound"}},
		},
	}, {
		name: "another network namespace: not judged by snapshots",
		steps: []step{
			{snap: snap()},
			{at: 1, evs: []string{connect + " netns=7", synAck + " netns=7"}, want: []string{"added 40000 pid=100 ESTAB outbound"}},
			{at: 2, snap: snap()},
			{at: 3, evs: []string{cliEnd + " netns=7"}, want: []string{"removed 40000 pid=100 CLOSE outbound dur=2ns"}},
		},
	}, {
		name: "end record lost: the next snapshot ends it; one applied after the snapshot began is not judged",
		steps: []step{
			{snap: snap()},
			{at: 1, evs: []string{connect, synAck}, want: []string{"added 40000 pid=100 ESTAB outbound"}},
			{at: 2, snap: snap(), want: []string{"removed 40000 pid=100 ESTAB outbound dur=1ns"}},
		},
	}, {
		name: "a snapshot of a socket known from events adds nothing",
		steps: []step{
			{snap: snap()},
			{at: 1, evs: []string{connect, synAck}, want: []string{"added 40000 pid=100 ESTAB outbound"}},
			{at: 2, snap: snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20 pid=100")},
			{at: 3, evs: []string{cliClose}, want: []string{"removed 40000 pid=100 FIN_WAIT1 outbound dur=2ns"}},
		},
	}, {
		name: "a snapshot's request socket is left to the events",
		steps: []step{
			{snap: snap()},
			{at: 1, snap: snap("tcp 127.0.0.1:80 127.0.0.1:40000 SYN_RECV cookie=9")},
			{at: 2, evs: []string{child, childEst, accepted}, want: []string{"added 80 pid=1 ESTAB inbound"}},
		},
	}, {
		name: "events without a cookie (accept after lost records) are left to snapshots",
		steps: []step{
			{snap: snap()},
			{at: 1, evs: []string{"ESTAB>ESTAB 127.0.0.1:80 127.0.0.1:40000 pid=1 accept"}},
			{at: 2, snap: snap("tcp 127.0.0.1:80 127.0.0.1:40000 ESTAB cookie=3 inode=30 pid=1"),
				want: []string{"added 80 pid=1 ESTAB outbound"}},
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(Options{Events: true, Netns: 1})
			for i, st := range tc.steps {
				now := t0.Add(st.at)
				var got []Event
				switch {
				case st.snap != nil:
					got = tr.Update(now, st.snap)
				case st.flush:
					got = tr.Flush(now)
				default:
					got = applyAt(tr, now, st.late, st.evs)
				}
				if r := render(got); !slices.Equal(r, st.want) {
					t.Errorf("step %d: got %q, want %q", i, r, st.want)
				}
			}
		})
	}
}

// Snapshots of another network namespace judge its connections only: what
// the events missed there (an end record lost, a connection opened before
// start) is found, and the watcher's own snapshots leave it alone.
func TestUpdateNetns(t *testing.T) {
	const (
		connect = "CLOSE>SENT 10.0.0.2:0 10.0.0.9:80 cookie=2 pid=100 owner netns=7"
		synAck  = "SENT>ESTAB 10.0.0.2:40000 10.0.0.9:80 cookie=2 pid=999 netns=7"
		estab   = "tcp 10.0.0.2:40000 10.0.0.9:80 ESTAB cookie=2 inode=20 pid=100"
		before  = "tcp 10.0.0.2:40001 10.0.0.9:80 ESTAB cookie=3 inode=30 pid=101"
		missed  = "tcp 10.0.0.2:40002 10.0.0.9:80 ESTAB cookie=4 inode=40 pid=102"
	)
	type nstep struct {
		at    time.Duration
		snap  []collector.Socket
		ns    uint32 // the snapshot's namespace; 0: the watcher's own (Update)
		first bool
		evs   []string
		want  []string
	}
	cases := []struct {
		name     string
		existing bool
		resumed  bool
		steps    []nstep
	}{{
		name: "end record lost in the namespace: its next snapshot ends it; the own snapshots do not",
		steps: []nstep{
			{snap: snap()},
			{snap: snap(), ns: 7, first: true},
			{at: 1, evs: []string{connect, synAck}, want: []string{"added 40000 pid=100 ESTAB outbound id=1"}},
			{at: 2, snap: snap()},
			{at: 3, snap: snap(estab), ns: 7},
			{at: 4, snap: snap()},
			{at: 5, snap: snap(), ns: 7, want: []string{"removed 40000 pid=100 ESTAB outbound dur=4ns id=1"}},
		},
	}, {
		name: "open before start: a baseline, as in the own namespace; its end is reported",
		steps: []nstep{
			{snap: snap()},
			{snap: snap(before), ns: 7, first: true},
			{at: 1, snap: snap(before), ns: 7},
			{at: 2, snap: snap(), ns: 7, want: []string{"removed 40001 pid=101 ESTAB outbound dur=2ns id=1"}},
		},
	}, {
		name:     "open before start, with EmitExisting: Existing",
		existing: true,
		steps: []nstep{
			{snap: snap()},
			{snap: snap(before), ns: 7, first: true, want: []string{"added 40001 pid=101 ESTAB outbound existing id=1"}},
		},
	}, {
		name:    "open before a resumed start: found while nobody watched",
		resumed: true,
		steps: []nstep{
			{snap: snap(before), ns: 7, first: true, want: []string{"added 40001 pid=101 ESTAB outbound offline id=1"}},
		},
	}, {
		name: "a connection the events missed in a later namespace is added",
		steps: []nstep{
			{snap: snap()},
			{at: 1, snap: snap(missed), ns: 8, want: []string{"added 40002 pid=102 ESTAB outbound id=1"}},
			{at: 2, snap: snap(missed), ns: 8},
		},
	}, {
		name: "the same tuple in two namespaces is two connections",
		steps: []nstep{
			{snap: snap()},
			{at: 1, snap: snap(missed), ns: 8, want: []string{"added 40002 pid=102 ESTAB outbound id=1"}},
			{at: 2, snap: snap("tcp 10.0.0.2:40002 10.0.0.9:80 ESTAB cookie=5 inode=50 pid=103"), ns: 9,
				want: []string{"added 40002 pid=103 ESTAB outbound id=2"}},
			{at: 3, snap: snap(), ns: 9, want: []string{"removed 40002 pid=103 ESTAB outbound dur=1ns id=2"}},
			{at: 4, snap: snap(missed), ns: 8},
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(Options{Events: true, Netns: 1, EmitExisting: tc.existing})
			if tc.resumed {
				tr.Resume(t0, snap(), nil, RestoreOptions{})
			}
			for i, st := range tc.steps {
				now := t0.Add(st.at)
				var got []Event
				switch {
				case st.evs != nil:
					got = applyAt(tr, now, 0, st.evs)
				case st.ns != 0:
					got = tr.UpdateNetns(now, st.ns, st.snap, collector.AllKinds, st.first)
				default:
					got = tr.Update(now, st.snap)
				}
				if r := renderOffline(got); !slices.Equal(r, st.want) {
					t.Errorf("step %d: got %q, want %q", i, r, st.want)
				}
			}
		})
	}
}

// A state saved with connections in another namespace resumes them there:
// the own first snapshot does not end them, the namespace's own does
// (or finds them still open and says nothing).
func TestResumeOtherNetns(t *testing.T) {
	const (
		connect  = "CLOSE>SENT 10.0.0.2:0 10.0.0.9:80 cookie=2 pid=100 owner netns=7"
		synAck   = "SENT>ESTAB 10.0.0.2:40000 10.0.0.9:80 cookie=2 pid=999 netns=7"
		connect2 = "CLOSE>SENT 10.0.0.2:0 10.0.0.9:80 cookie=3 pid=101 owner netns=7"
		synAck2  = "SENT>ESTAB 10.0.0.2:40001 10.0.0.9:80 cookie=3 pid=999 netns=7"
		estab    = "tcp 10.0.0.2:40000 10.0.0.9:80 ESTAB cookie=2 inode=20 pid=100"
	)
	tr := New(Options{Events: true, Netns: 1})
	tr.Update(t0, snap())
	evs := []SockEvent{kev(connect), kev(synAck), kev(connect2), kev(synAck2)}
	if got := render(tr.Apply(t0.Add(1), evs)); len(got) != 2 {
		t.Fatalf("before the restart: %q", got)
	}
	saved := tr.Save(t0.Add(1), SaveOptions{})
	for _, sv := range saved {
		if sv.Netns != 7 {
			t.Errorf("saved connection %d: Netns %d, want 7", sv.ID, sv.Netns)
		}
	}

	tr = New(Options{Events: true, Netns: 1})
	if got := renderOffline(tr.Resume(t0.Add(2), snap(), saved, RestoreOptions{NextID: 2})); got != nil {
		t.Errorf("own first snapshot judged the other namespace: %q", got)
	}
	if got, want := tr.OtherNetns(), []uint32{7}; !slices.Equal(got, want) {
		t.Errorf("OtherNetns %v, want %v", got, want)
	}
	got := renderOffline(tr.UpdateNetns(t0.Add(3), 7, snap(estab), collector.AllKinds, true))
	if want := []string{"removed 40001 pid=101 ESTAB outbound dur=2ns offline id=2"}; !slices.Equal(got, want) {
		t.Errorf("the namespace's first snapshot: %q, want %q", got, want)
	}
	// The namespace ends (its last process exits): so does what was open there.
	got = renderOffline(tr.UpdateNetns(t0.Add(4), 7, nil, collector.AllKinds, false))
	if want := []string{"removed 40000 pid=100 ESTAB outbound dur=3ns id=1"}; !slices.Equal(got, want) {
		t.Errorf("namespace gone: %q, want %q", got, want)
	}
	if got := tr.OtherNetns(); got != nil {
		t.Errorf("OtherNetns %v after its end", got)
	}
}
