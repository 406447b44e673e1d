package kevents

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/netwatch-dfir/netwatch/vql/collector"
)

// connRecord encodes ev as bpf/kevents.bpf.c's struct conn_record.
func connRecord(ev Event) []byte {
	ne := binary.NativeEndian
	b := make([]byte, connLen)
	b[0], b[1], b[2], b[3] = byte(ev.Kind), ev.Sock.Family, byte(ev.Sock.Old), byte(ev.Sock.New)
	ne.PutUint32(b[4:], ev.Sock.Netns)
	ne.PutUint64(b[8:], ev.Sock.Cookie)
	ne.PutUint64(b[16:], ev.Time)
	ne.PutUint16(b[24:], ev.Sock.Local.Port())
	ne.PutUint16(b[26:], ev.Sock.Remote.Port())
	copy(b[32:48], ev.Sock.Local.Addr().AsSlice())
	copy(b[48:64], ev.Sock.Remote.Addr().AsSlice())
	putTask(b[64:], ev.Task)
	return b
}

func execRecord(ev Event) []byte {
	ne := binary.NativeEndian
	b := make([]byte, execLen)
	b[0] = byte(Exec)
	ne.PutUint32(b[4:], uint32(len(ev.Cmdline)))
	ne.PutUint64(b[8:], ev.Time)
	putTask(b[16:], ev.Task)
	copy(b[16+taskLen:], ev.Filename)
	copy(b[16+taskLen+execFilename:], ev.Cmdline)
	return b
}

func putTask(b []byte, t Task) {
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(t.Pid))
	ne.PutUint32(b[4:], uint32(t.Tid))
	ne.PutUint32(b[8:], uint32(t.Ppid))
	ne.PutUint32(b[12:], t.UID)
	ne.PutUint64(b[16:], t.Start)
	copy(b[24:40], t.Comm)
}

var (
	task    = Task{Pid: 4242, Tid: 4243, Ppid: 1, UID: 1000, Start: 123_456_789_000, Comm: "curl"}
	connect = Event{Kind: State, Time: 99, Task: task, Sock: Sock{
		Family: collector.AF_INET, Old: collector.StateClose, New: collector.StateSynSent,
		Netns: 4026531833, Cookie: 77,
		Local:  netip.MustParseAddrPort("10.0.0.2:0"),
		Remote: netip.MustParseAddrPort("192.0.2.1:443")}}
	accept6 = Event{Kind: Accept, Time: 100, Task: task, Sock: Sock{
		Family: collector.AF_INET6, Old: collector.StateEstablished, New: collector.StateEstablished,
		Netns: 4026532000, Cookie: 78,
		Local:  netip.MustParseAddrPort("[2001:db8::1]:22"),
		Remote: netip.MustParseAddrPort("[2001:db8::2]:50000")}}
	execEv = Event{Kind: Exec, Time: 101, Task: task, Filename: "/usr/bin/curl",
		Cmdline: []byte("curl\x00-s\x00http://example.invalid/\x00")}
)

func TestParse(t *testing.T) {
	longComm := task
	longComm.Comm = "exactly16bytes!!" // the kernel's comm has no room for a NUL then
	truncExec := execEv
	truncExec.Cmdline = make([]byte, execArgs)
	overlong := execRecord(truncExec)
	binary.NativeEndian.PutUint32(overlong[4:], 1<<20) // a length beyond the buffer is clamped

	for _, tc := range []struct {
		name string
		in   []byte
		want Event
		err  error
	}{
		{"connect v4", connRecord(connect), connect, nil},
		{"accept v6", connRecord(accept6), accept6, nil},
		{"exec", execRecord(execEv), execEv, nil},
		{"16-byte comm", connRecord(Event{Kind: State, Task: longComm, Sock: connect.Sock}),
			Event{Kind: State, Task: longComm, Sock: connect.Sock}, nil},
		{"exec args clamped", overlong, truncExec, nil},
		{"empty", nil, Event{}, errShort},
		{"short conn", connRecord(connect)[:connLen-1], Event{}, errShort},
		{"short exec", execRecord(execEv)[:100], Event{}, errShort},
		{"unknown kind", []byte{9, 0, 0, 0}, Event{}, errKind},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseOddValues(t *testing.T) {
	b := connRecord(connect)
	b[1] = 1 // AF_UNIX: the programs only send inet sockets
	if _, err := Parse(b); err == nil {
		t.Error("family 1 accepted")
	}
	b = connRecord(connect)
	b[3] = 200 // no such TCP state
	ev, err := Parse(b)
	if err != nil || ev.Sock.New != collector.StateUnknown {
		t.Errorf("state 200: %v %v", ev.Sock.New, err)
	}
}

func TestByOwner(t *testing.T) {
	st := func(o, n collector.State) Event {
		return Event{Kind: State, Sock: Sock{Old: o, New: n}}
	}
	for _, tc := range []struct {
		ev   Event
		want bool
	}{
		{st(collector.StateClose, collector.StateSynSent), true},        // connect()
		{st(collector.StateClose, collector.StateListen), true},         // listen()
		{st(collector.StateEstablished, collector.StateFinWait1), true}, // close()
		{st(collector.StateCloseWait, collector.StateLastAck), true},    // close() after the peer's
		{accept6, true},
		{st(collector.StateSynSent, collector.StateEstablished), false}, // the SYN-ACK, in softirq
		{st(collector.StateSynRecv, collector.StateEstablished), false},
		{st(collector.StateEstablished, collector.StateCloseWait), false},
		{st(collector.StateFinWait1, collector.StateFinWait2), false},
		{st(collector.StateFinWait2, collector.StateClose), false},
		{st(collector.StateEstablished, collector.StateClose), false}, // a reset, or an abort: not told apart
		{execEv, false},
	} {
		if got := tc.ev.ByOwner(); got != tc.want {
			t.Errorf("%v %v->%v: ByOwner = %v", tc.ev.Kind, tc.ev.Sock.Old, tc.ev.Sock.New, got)
		}
	}
}

// FuzzParse: any bytes give an event or an error, never a panic, and an
// event re-encodes to a record that parses the same.
func FuzzParse(f *testing.F) {
	for _, ev := range []Event{connect, accept6, execEv} {
		if ev.Kind == Exec {
			f.Add(execRecord(ev))
		} else {
			f.Add(connRecord(ev))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Parse(b)
		if err != nil {
			return
		}
		var again []byte
		if ev.Kind == Exec {
			again = execRecord(ev)
		} else {
			again = connRecord(ev)
		}
		ev2, err := Parse(again)
		if err != nil {
			t.Fatalf("re-encoded record: %v", err)
		}
		if ev.Kind != Exec && !reflect.DeepEqual(ev, ev2) {
			t.Fatalf("round trip: %+v != %+v", ev, ev2)
		}
	})
}
