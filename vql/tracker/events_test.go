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

type step struct {
	at    time.Duration
	snap  []collector.Socket // a snapshot, or
	evs   []string           // a batch of kernel events, or
	flush bool               // a Flush
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
					evs := make([]SockEvent, len(st.evs))
					for j, d := range st.evs {
						evs[j] = kev(d)
						evs[j].Time = now
					}
					got = tr.Apply(now, evs)
				}
				if r := render(got); !slices.Equal(r, st.want) {
					t.Errorf("step %d: got %q, want %q", i, r, st.want)
				}
			}
		})
	}
}
