package tracker

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/netwatch-dfir/netwatch/vql/collector"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// sock builds a socket from a compact description:
// "tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=1 inode=10 pid=100".
func sock(desc string) collector.Socket {
	f := strings.Fields(desc)
	s := collector.Socket{Family: collector.AF_INET, Type: collector.SOCK_STREAM, Pid: -1}
	if f[0] == "udp" {
		s.Type = collector.SOCK_DGRAM
	}
	s.Local = netip.MustParseAddrPort(f[1])
	s.Remote = netip.MustParseAddrPort(f[2])
	if s.Local.Addr().Is6() {
		s.Family = collector.AF_INET6
	}
	states := map[string]collector.State{"ESTAB": collector.StateEstablished,
		"LISTEN": collector.StateListen, "TIME_WAIT": collector.StateTimeWait,
		"SENT": collector.StateSynSent, "CLOSE": collector.StateClose,
		"FIN_WAIT2": collector.StateFinWait2, "FIN_WAIT1": collector.StateFinWait1,
		"SYN_RECV": collector.StateSynRecv, "CLOSE_WAIT": collector.StateCloseWait,
		"LAST_ACK": collector.StateLastAck}
	s.State = states[f[3]]
	for _, kv := range f[4:] {
		var n int64
		name, val, _ := strings.Cut(kv, "=")
		fmt.Sscan(val, &n)
		switch name {
		case "cookie":
			s.Cookie = uint64(n)
		case "inode":
			s.Inode = uint64(n)
		case "pid":
			s.Pid = int32(n)
		case "orphan":
			s.Orphan = n != 0
		}
	}
	// The collector's rule: a TCP socket without inode in a state only
	// close() leads to (an ESTAB one may be waiting for accept()).
	if s.IsTCP() && s.Inode == 0 && !strings.Contains(desc, "windows") {
		switch s.State {
		case collector.StateFinWait2, collector.StateTimeWait, collector.StateClose:
			s.Orphan = true
		}
	}
	return s
}

func snap(descs ...string) []collector.Socket {
	out := make([]collector.Socket, len(descs))
	for i, d := range descs {
		out[i] = sock(d)
	}
	return out
}

// render makes events comparable: "added 40000 pid=100 ESTAB outbound".
func render(evs []Event) []string {
	var out []string
	for _, e := range evs {
		s := fmt.Sprintf("%s %d pid=%d %s %s", e.Diff, e.Conn.Socket.Local.Port(), e.Conn.Pid,
			e.State, e.Conn.Direction)
		if e.Diff == Removed {
			s += fmt.Sprintf(" dur=%s", e.Duration)
		}
		if e.Existing {
			s += " existing"
		}
		out = append(out, s)
	}
	return out
}

func TestTracker(t *testing.T) {
	const (
		listener = "tcp 127.0.0.1:80 0.0.0.0:0 LISTEN cookie=1 inode=1 pid=1"
		client   = "tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20 pid=100"
		server   = "tcp 127.0.0.1:80 127.0.0.1:40000 ESTAB cookie=3 inode=30 pid=1"
		clientTW = "tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT cookie=2"
	)
	cases := []struct {
		name  string
		opts  Options
		ticks [][]collector.Socket
		want  [][]string // events per tick
	}{{
		name:  "baseline is silent, then add and remove",
		ticks: [][]collector.Socket{snap(listener), snap(listener, client, server), snap(listener)},
		want: [][]string{nil,
			{"added 40000 pid=100 ESTAB outbound", "added 80 pid=1 ESTAB inbound"},
			{"removed 40000 pid=100 ESTAB outbound dur=1s", "removed 80 pid=1 ESTAB inbound dur=1s"}},
	}, {
		name:  "emit existing",
		opts:  Options{EmitExisting: true},
		ticks: [][]collector.Socket{snap(listener)},
		want:  [][]string{{"added 80 pid=1 LISTEN listen existing"}},
	}, {
		name:  "existing only in the first snapshot",
		opts:  Options{EmitExisting: true},
		ticks: [][]collector.Socket{snap(listener), snap(listener, client)},
		want:  [][]string{{"added 80 pid=1 LISTEN listen existing"}, {"added 40000 pid=100 ESTAB outbound"}},
	}, {
		name:  "TIME_WAIT by cookie ends the connection once; remnant vanishing is silent",
		ticks: [][]collector.Socket{snap(), snap(client), snap(clientTW), snap(clientTW), snap()},
		want: [][]string{nil, {"added 40000 pid=100 ESTAB outbound"},
			{"removed 40000 pid=100 TIME_WAIT outbound dur=1s"}, nil, nil},
	}, {
		name: "TIME_WAIT remnant under a new key (procfs: inode 0, no cookie)",
		ticks: [][]collector.Socket{snap(),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB inode=20 pid=100"),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT"),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT"),
			snap()},
		want: [][]string{nil, {"added 40000 pid=100 ESTAB outbound"},
			{"removed 40000 pid=100 TIME_WAIT outbound dur=1s"}, nil, nil},
	}, {
		name: "remnant seen one tick late (non-atomic read) is not new",
		ticks: [][]collector.Socket{snap(),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB inode=20 pid=100"),
			snap(),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT")},
		want: [][]string{nil, {"added 40000 pid=100 ESTAB outbound"},
			{"removed 40000 pid=100 ESTAB outbound dur=1s"}, nil},
	}, {
		name:  "opened and closed between ticks: one added with pid -1",
		ticks: [][]collector.Socket{snap(listener), snap(listener, clientTW), snap(listener, clientTW), snap(listener)},
		want:  [][]string{nil, {"added 40000 pid=-1 TIME_WAIT outbound"}, nil, nil},
	}, {
		name: "orphan of a listener that is gone has unknown direction",
		ticks: [][]collector.Socket{snap(),
			snap("tcp 127.0.0.1:80 127.0.0.1:40000 TIME_WAIT cookie=9")},
		want: [][]string{nil, {"added 80 pid=-1 TIME_WAIT unknown"}},
	}, {
		name: "tuple reuse by a new socket is a new connection",
		ticks: [][]collector.Socket{snap(), snap(client), snap(clientTW),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=7 inode=70 pid=101")},
		want: [][]string{nil, {"added 40000 pid=100 ESTAB outbound"},
			{"removed 40000 pid=100 TIME_WAIT outbound dur=1s"},
			{"added 40000 pid=101 ESTAB outbound"}},
	}, {
		name: "PID reuse: same pid, new socket, new connection",
		ticks: [][]collector.Socket{snap(), snap(client), snap(),
			snap("tcp 127.0.0.1:40001 127.0.0.1:80 ESTAB cookie=8 inode=80 pid=100")},
		want: [][]string{nil, {"added 40000 pid=100 ESTAB outbound"},
			{"removed 40000 pid=100 ESTAB outbound dur=1s"},
			{"added 40001 pid=100 ESTAB outbound"}},
	}, {
		name: "owner held until resolved",
		opts: Options{HoldTicks: 2},
		ticks: [][]collector.Socket{snap(listener),
			snap(listener, "tcp 127.0.0.1:80 127.0.0.1:40000 ESTAB cookie=3 inode=30"),
			snap(listener, server)},
		want: [][]string{nil, nil, {"added 80 pid=1 ESTAB inbound"}},
	}, {
		name: "owner never found: reported with pid -1 after the hold",
		opts: Options{HoldTicks: 1},
		ticks: [][]collector.Socket{snap(),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20"),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20")},
		want: [][]string{nil, nil, {"added 40000 pid=-1 ESTAB outbound"}},
	}, {
		name: "held socket that vanishes is still reported, added then removed",
		opts: Options{HoldTicks: 3},
		ticks: [][]collector.Socket{snap(),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20"), snap()},
		want: [][]string{nil, nil, {"added 40000 pid=-1 ESTAB outbound", "removed 40000 pid=-1 ESTAB outbound dur=1s"}},
	}, {
		name: "windows: tuple+pid identity, TIME_WAIT owner 0",
		ticks: [][]collector.Socket{snap(),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB pid=100 windows"),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT pid=0 orphan=1 windows"),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 TIME_WAIT pid=0 orphan=1 windows"),
			snap("tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB pid=102 windows")},
		want: [][]string{nil, {"added 40000 pid=100 ESTAB outbound"},
			{"removed 40000 pid=100 TIME_WAIT outbound dur=1s"}, nil,
			{"added 40000 pid=102 ESTAB outbound"}},
	}, {
		name: "udp: connected is outbound, unconnected listens, no close state",
		ticks: [][]collector.Socket{snap(),
			snap("udp 127.0.0.1:5353 0.0.0.0:0 CLOSE cookie=4 inode=40 pid=5",
				"udp 127.0.0.1:40002 127.0.0.1:53 ESTAB cookie=5 inode=50 pid=6"),
			snap()},
		want: [][]string{nil, {"added 5353 pid=5 CLOSE listen", "added 40002 pid=6 ESTAB outbound"},
			{"removed 5353 pid=5 CLOSE listen dur=1s", "removed 40002 pid=6 ESTAB outbound dur=1s"}},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(tc.opts)
			for i, s := range tc.ticks {
				got := render(tr.Update(t0.Add(time.Duration(i)*time.Second), s))
				if fmt.Sprint(got) != fmt.Sprint(tc.want[i]) {
					t.Errorf("tick %d:\n got %q\nwant %q", i, got, tc.want[i])
				}
			}
		})
	}
}

// Every connection yields one added and at most one removed, whatever the
// order of states it goes through.
func TestTrackerOneAddedAtMostOneRemoved(t *testing.T) {
	states := []string{"ESTAB", "FIN_WAIT2", "TIME_WAIT", "-"}
	tr := New(Options{})
	tr.Update(t0, nil)
	counts := map[uint16][2]int{}
	// Each port walks through a different sequence of the states a socket
	// can go through in order (a state left is never entered again: the
	// same tuple back in ESTAB would be a new socket).
	var seqs [][]string
	for a := range states {
		for b := a; b < len(states); b++ {
			for c := b; c < len(states); c++ {
				seqs = append(seqs, []string{states[a], states[b], states[c], "-"})
			}
		}
	}
	for tick := 0; tick < 4; tick++ {
		var socks []collector.Socket
		for i, seq := range seqs {
			st := seq[tick]
			if st == "-" {
				continue
			}
			inode := fmt.Sprintf(" inode=%d pid=%d", 1000+i, 10+i)
			if st == "TIME_WAIT" || st == "FIN_WAIT2" && tick > 0 {
				inode = ""
			}
			socks = append(socks, sock(fmt.Sprintf("tcp 127.0.0.1:%d 127.0.0.1:80 %s%s", 30000+i, st, inode)))
		}
		for _, e := range tr.Update(t0.Add(time.Duration(tick+1)*time.Second), socks) {
			c := counts[e.Conn.Socket.Local.Port()]
			c[e.Diff-1]++
			counts[e.Conn.Socket.Local.Port()] = c
		}
	}
	for port, c := range counts {
		if c[0] != 1 || c[1] > 1 {
			t.Errorf("port %d: %d added, %d removed", port, c[0], c[1])
		}
	}
	if tr.conns.len() != 0 {
		t.Errorf("tracker still holds %d sockets after all vanished", tr.conns.len())
	}
}

// /proc lists an accepted socket still in the listener's queue with inode 0;
// once accept() gives it an fd it has an inode. Same connection.
func TestTrackerAcceptQueueProcfs(t *testing.T) {
	tr := New(Options{HoldTicks: 1})
	const listener = "tcp 127.0.0.1:80 0.0.0.0:0 LISTEN inode=1 pid=1"
	ticks := [][]collector.Socket{
		snap(listener),
		snap(listener, "tcp 127.0.0.1:80 127.0.0.1:40000 ESTAB"),
		snap(listener, "tcp 127.0.0.1:80 127.0.0.1:40000 ESTAB inode=30 pid=1"),
		snap(listener),
	}
	var got []string
	for i, s := range ticks {
		got = append(got, render(tr.Update(t0.Add(time.Duration(i)*time.Second), s))...)
	}
	want := []string{"added 80 pid=1 ESTAB inbound", "removed 80 pid=1 ESTAB inbound dur=2s"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q want %q", got, want)
	}
}

// Moving from netlink (cookies) to /proc/net (inodes) mid-stream reports
// nothing for the sockets that are still there.
func TestTrackerRebase(t *testing.T) {
	tr := New(Options{})
	tr.Update(t0, snap())
	tr.Update(t0.Add(time.Second), snap(
		"tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB cookie=2 inode=20 pid=100",
		"tcp 127.0.0.1:40001 127.0.0.1:80 TIME_WAIT cookie=3"))
	procfs := snap(
		"tcp 127.0.0.1:40000 127.0.0.1:80 ESTAB inode=20 pid=100",
		"tcp 127.0.0.1:40001 127.0.0.1:80 TIME_WAIT")
	tr.Rebase(procfs)
	if got := render(tr.Update(t0.Add(2*time.Second), procfs)); got != nil {
		t.Errorf("after rebase: %q", got)
	}
	got := render(tr.Update(t0.Add(3*time.Second), snap()))
	want := []string{"removed 40000 pid=100 ESTAB outbound dur=2s"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q want %q", got, want)
	}
}

// A busy server holds tens of thousands of connections: a field added to
// Conn costs that many times over (docs/BENCHMARKS.md, the memory figure).
func TestConnStaysSmall(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 224 {
		t.Errorf("Conn is %d bytes, was 224: keep new fields small or outside it", n)
	}
}
