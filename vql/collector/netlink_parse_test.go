package collector

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

// nlmsg builds a netlink message, padded as the kernel pads it.
func nlmsg(typ uint16, seq uint32, payload []byte) []byte {
	ne := binary.NativeEndian
	b := make([]byte, nlmsgAlign(nlmsgHdrLen+len(payload)))
	ne.PutUint32(b[0:4], uint32(nlmsgHdrLen+len(payload)))
	ne.PutUint16(b[4:6], typ)
	ne.PutUint16(b[6:8], 0x2) // NLM_F_MULTI
	ne.PutUint32(b[8:12], seq)
	copy(b[nlmsgHdrLen:], payload)
	return b
}

// diagMsg builds a struct inet_diag_msg for s.
func diagMsg(s Socket) []byte {
	ne, be := binary.NativeEndian, binary.BigEndian
	b := make([]byte, inetDiagMsgLen)
	b[0] = s.Family
	b[1] = uint8(s.State)
	be.PutUint16(b[4:6], s.Local.Port())
	be.PutUint16(b[6:8], s.Remote.Port())
	src, dst := s.Local.Addr().AsSlice(), s.Remote.Addr().AsSlice()
	copy(b[8:24], src)
	copy(b[24:40], dst)
	ne.PutUint32(b[44:48], uint32(s.Cookie))
	ne.PutUint32(b[48:52], uint32(s.Cookie>>32))
	ne.PutUint32(b[64:68], s.UID)
	ne.PutUint32(b[68:72], uint32(s.Inode))
	return b
}

func errnoMsg(seq uint32, errno int32) []byte {
	p := make([]byte, 4+nlmsgHdrLen) // the error and the request's header
	binary.NativeEndian.PutUint32(p, uint32(errno))
	return nlmsg(nlmsgError, seq, p)
}

func doneMsg(seq uint32, errno int32) []byte {
	p := make([]byte, 4)
	binary.NativeEndian.PutUint32(p, uint32(errno))
	return nlmsg(nlmsgDone, seq, p)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// Linux's numbers, which the replies carry whatever OS runs the test.
const (
	linuxENOENT = 2
	linuxEINTR  = 4
	linuxEINVAL = 22
)

var (
	tcpListen = Socket{
		Family: AF_INET, Type: SOCK_STREAM, State: StateListen,
		Local:  netip.MustParseAddrPort("127.0.0.1:80"),
		Remote: netip.MustParseAddrPort("0.0.0.0:0"),
		Cookie: 0x1_0000_0002, Inode: 1234, UID: 1000, Pid: -1,
	}
	tcp6Estab = Socket{
		Family: AF_INET6, Type: SOCK_STREAM, State: StateEstablished,
		Local:  netip.MustParseAddrPort("[2001:db8::1]:443"),
		Remote: netip.MustParseAddrPort("[::ffff:192.0.2.7]:50000"),
		Cookie: 0xdead_beef_0000_0001, Inode: 0xffff_fffe, Pid: -1,
	}
	tcpTimeWait = Socket{
		Family: AF_INET, Type: SOCK_STREAM, State: StateTimeWait,
		Local:  netip.MustParseAddrPort("10.0.0.1:40000"),
		Remote: netip.MustParseAddrPort("10.0.0.2:22"),
		Cookie: 7, Pid: -1, Orphan: true,
	}
	udpUnowned = Socket{
		Family: AF_INET, Type: SOCK_DGRAM, State: StateClose,
		Local:  netip.MustParseAddrPort("0.0.0.0:53"),
		Remote: netip.MustParseAddrPort("0.0.0.0:0"),
		Pid:    -1,
	}
)

func TestParseInetDiag(t *testing.T) {
	withAttrs := cat(diagMsg(tcpListen), []byte{5, 0, 8, 0, 1}) // INET_DIAG_SHUTDOWN-like, unaligned
	unpadded := nlmsg(sockDiagByFamily, 1, withAttrs)
	unpadded = unpadded[:nlmsgHdrLen+len(withAttrs)]

	for _, tc := range []struct {
		name  string
		b     []byte
		typ   uint8
		want  []Socket
		done  bool
		errno syscall.Errno
		err   string
	}{
		{name: "empty", b: nil, typ: SOCK_STREAM},
		{name: "one", b: nlmsg(sockDiagByFamily, 1, diagMsg(tcpListen)), typ: SOCK_STREAM, want: []Socket{tcpListen}},
		{
			name: "several then done",
			b: cat(nlmsg(sockDiagByFamily, 1, diagMsg(tcpListen)),
				nlmsg(sockDiagByFamily, 1, diagMsg(tcp6Estab)),
				nlmsg(sockDiagByFamily, 1, diagMsg(tcpTimeWait)),
				doneMsg(1, 0)),
			typ: SOCK_STREAM, want: []Socket{tcpListen, tcp6Estab, tcpTimeWait}, done: true,
		},
		{
			name: "nothing read after done",
			b:    cat(doneMsg(1, 0), nlmsg(sockDiagByFamily, 1, diagMsg(tcpListen))),
			typ:  SOCK_STREAM, done: true,
		},
		{name: "done without payload", b: nlmsg(nlmsgDone, 1, nil), typ: SOCK_STREAM, done: true},
		{
			name: "attributes skipped, padding honoured",
			b:    cat(nlmsg(sockDiagByFamily, 1, withAttrs), nlmsg(sockDiagByFamily, 1, diagMsg(tcpTimeWait))),
			typ:  SOCK_STREAM, want: []Socket{tcpListen, tcpTimeWait},
		},
		{name: "last message unpadded", b: unpadded, typ: SOCK_STREAM, want: []Socket{tcpListen}},
		{name: "udp inode 0 is no orphan", b: nlmsg(sockDiagByFamily, 1, diagMsg(udpUnowned)), typ: SOCK_DGRAM, want: []Socket{udpUnowned}},
		{
			name: "noop and ack skipped",
			b:    cat(nlmsg(nlmsgNoop, 1, nil), errnoMsg(1, 0), nlmsg(sockDiagByFamily, 1, diagMsg(tcpListen))),
			typ:  SOCK_STREAM, want: []Socket{tcpListen},
		},
		{
			name: "error keeps what came before",
			b:    cat(nlmsg(sockDiagByFamily, 1, diagMsg(tcpListen)), errnoMsg(1, -linuxENOENT)),
			typ:  SOCK_STREAM, want: []Socket{tcpListen}, errno: linuxENOENT,
		},
		{name: "error", b: errnoMsg(1, -linuxEINVAL), typ: SOCK_STREAM, errno: linuxEINVAL},
		{name: "done with error", b: doneMsg(1, -linuxEINTR), typ: SOCK_STREAM, done: true, errno: linuxEINTR},
		{name: "truncated error", b: nlmsg(nlmsgError, 1, []byte{1, 2}), typ: SOCK_STREAM, err: "truncated"},
		{name: "truncated header", b: nlmsg(sockDiagByFamily, 1, diagMsg(tcpListen))[:10], typ: SOCK_STREAM, err: "truncated"},
		{
			name: "length too small",
			b:    func() []byte { b := nlmsg(nlmsgDone, 1, nil); binary.NativeEndian.PutUint32(b, 15); return b }(),
			typ:  SOCK_STREAM, err: "bad netlink message length 15",
		},
		{
			name: "length too large",
			b:    nlmsg(sockDiagByFamily, 1, diagMsg(tcpListen))[:80],
			typ:  SOCK_STREAM, err: "bad netlink message length 88",
		},
		{name: "short inet_diag_msg", b: nlmsg(sockDiagByFamily, 1, diagMsg(tcpListen)[:71]), typ: SOCK_STREAM, err: "truncated"},
		{
			name: "bad family",
			b:    func() []byte { p := diagMsg(tcpListen); p[0] = 1; return nlmsg(sockDiagByFamily, 1, p) }(),
			typ:  SOCK_STREAM, err: "address family 1",
		},
		{name: "overrun", b: nlmsg(nlmsgOverrun, 1, nil), typ: SOCK_STREAM, err: "overrun"},
		{name: "unknown type", b: nlmsg(99, 1, nil), typ: SOCK_STREAM, err: "type 99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []Socket{{Pid: 42}}
			got, done, err := ParseInetDiag(tc.b, tc.typ, prefix)
			switch {
			case tc.errno != 0:
				var errno syscall.Errno
				if !errors.As(err, &errno) || errno != tc.errno {
					t.Errorf("err = %v, want errno %d", err, tc.errno)
				}
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want %q", err, tc.err)
				}
			case err != nil:
				t.Errorf("err = %v", err)
			}
			if done != tc.done {
				t.Errorf("done = %v, want %v", done, tc.done)
			}
			checkAppended(t, got, prefix, tc.want)
		})
	}
}

// The collector skips what is left of an abandoned dump, DONE included.
func TestParseInetDiagSeq(t *testing.T) {
	b := cat(nlmsg(sockDiagByFamily, 1, diagMsg(tcpTimeWait)), doneMsg(1, 0),
		nlmsg(sockDiagByFamily, 2, diagMsg(tcpListen)), doneMsg(2, 0))
	got, done, err := parseInetDiag(b, SOCK_STREAM, 2, true, nil)
	if err != nil || !done || len(got) != 1 || got[0] != tcpListen {
		t.Errorf("got %+v, done %v, err %v", got, done, err)
	}
}

func TestOrphaned(t *testing.T) {
	for st := StateUnknown; st <= StateNewSynRecv; st++ {
		want := false
		switch st {
		case StateFinWait1, StateFinWait2, StateTimeWait, StateClose, StateLastAck, StateClosing:
			want = true
		}
		if got := orphaned(SOCK_STREAM, st, 0); got != want {
			t.Errorf("tcp %s inode 0: orphaned = %v", st, got)
		}
		if orphaned(SOCK_STREAM, st, 1) || orphaned(SOCK_DGRAM, st, 0) {
			t.Errorf("%s: owned or UDP socket orphaned", st)
		}
	}
}

func FuzzParseInetDiag(f *testing.F) {
	f.Add(cat(nlmsg(sockDiagByFamily, 1, diagMsg(tcpListen)), nlmsg(sockDiagByFamily, 1, diagMsg(tcp6Estab)), doneMsg(1, 0)), uint8(SOCK_STREAM))
	f.Add(cat(nlmsg(sockDiagByFamily, 1, cat(diagMsg(tcpTimeWait), []byte{5, 0, 8, 0, 1})), errnoMsg(1, -linuxEINVAL)), uint8(SOCK_STREAM))
	f.Add(nlmsg(sockDiagByFamily, 1, diagMsg(udpUnowned)), uint8(SOCK_DGRAM))
	f.Fuzz(func(t *testing.T, b []byte, typ uint8) {
		prefix := []Socket{{Pid: 42}}
		got, _, err := ParseInetDiag(b, typ, prefix)
		if len(got) == 0 || got[0] != prefix[0] {
			t.Fatalf("dst prefix lost: %+v", got)
		}
		if len(got)-1 > len(b)/(nlmsgHdrLen+inetDiagMsgLen) {
			t.Fatalf("%d sockets from %d bytes", len(got)-1, len(b))
		}
		if err != nil {
			return
		}
		for _, s := range got[1:] {
			checkSocket(t, s, typ)
		}
	})
}

// checkSocket asserts what holds for every socket a parser returns.
func checkSocket(t *testing.T, s Socket, typ uint8) {
	t.Helper()
	if s.Type != typ || s.Pid != -1 || (s.Family != AF_INET && s.Family != AF_INET6) {
		t.Fatalf("bad socket %+v", s)
	}
	for _, ap := range []netip.AddrPort{s.Local, s.Remote} {
		if !ap.IsValid() || ap.Addr().Zone() != "" || ap.Addr().Is4() != (s.Family == AF_INET) {
			t.Fatalf("bad address %v in %+v", ap, s)
		}
	}
	if s.Orphan != orphaned(typ, s.State, s.Inode) {
		t.Fatalf("orphan %v for %+v", s.Orphan, s)
	}
}
