package collector

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// pcb describes one PCB of a macOS pcblist_n as the fixtures write it.
type pcb struct {
	family        uint32 // xso_family: 2, 30, or 0 for a user-space flow
	vflag         uint8  // inp_vflag
	local, remote netip.AddrPort
	gencnt        uint64
	tstate        uint32 // t_state
	soState       uint16
	uid           uint32
	pid           int32 // so_last_pid
	proto         int32 // xso_protocol; 0: the list's
	scope         uint16
	oldSocket     bool // the 76-byte xsocket_n of macOS before 10.15
}

// The sizes of XNU's records (sizeof under #pragma pack(4)).
const (
	xinpcbNLen   = 104
	xsocketNLen  = 104
	xsockbufNLen = 32
	xsockstatLen = 136
	xtcpcbNLen   = 204
)

// pad8 pads a record to 8 bytes, as ADVANCE64 places the next one.
func pad8(b []byte) []byte { return append(b, make([]byte, roundup8(len(b))-len(b))...) }

func record(n int, kind uint32) []byte {
	b := make([]byte, n)
	binary.LittleEndian.PutUint32(b[0:], uint32(n))
	binary.LittleEndian.PutUint32(b[4:], kind)
	return b
}

// pcbAddrBytes writes an address the way struct inpcb holds it: IPv4 in
// the last 4 bytes of an in_addr_4in6, link-local IPv6 with the interface
// index embedded in bytes 2-3.
func pcbAddrBytes(dst []byte, a netip.Addr, scope uint16) {
	if a.Is4() {
		copy(dst[12:], a.AsSlice())
		return
	}
	copy(dst, a.AsSlice())
	if a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() {
		binary.BigEndian.PutUint16(dst[2:], scope)
	}
}

// xinpcbN builds a struct xinpcb_n (bsd/netinet/in_pcb.h).
func xinpcbN(p pcb) []byte {
	le, be := binary.LittleEndian, binary.BigEndian
	b := record(xinpcbNLen, xsoInpcb)
	le.PutUint64(b[8:], 0xffffff80_12345678)         // xi_inpp
	be.PutUint16(b[16:], p.remote.Port())            // inp_fport
	be.PutUint16(b[18:], p.local.Port())             // inp_lport
	le.PutUint64(b[20:], 0xffffff80_87654321)        // inp_ppcb
	le.PutUint64(b[28:], p.gencnt)                   // inp_gencnt
	b[44] = p.vflag                                  // inp_vflag
	b[45], b[46] = 64, 6                             // inp_ip_ttl, inp_ip_p
	pcbAddrBytes(b[48:64], p.remote.Addr(), p.scope) // inp_dependfaddr
	pcbAddrBytes(b[64:80], p.local.Addr(), p.scope)  // inp_dependladdr
	le.PutUint32(b[96:], 0xabcdef01)                 // inp_flowhash
	return b
}

// xsocketN builds a struct xsocket_n (bsd/sys/socketvar.h).
func xsocketN(p pcb, proto int32) []byte {
	le := binary.LittleEndian
	n := xsocketNLen
	if p.oldSocket {
		n = 76
	}
	b := record(n, xsoSocket)
	le.PutUint64(b[8:], 0xffffff80_00c0ffee) // xso_so
	le.PutUint16(b[16:], 1)                  // so_type
	le.PutUint16(b[26:], p.soState)          // so_state
	le.PutUint32(b[36:], uint32(proto))      // xso_protocol
	le.PutUint32(b[40:], p.family)           // xso_family
	le.PutUint32(b[56:], 0xffffffff)         // so_pgid
	le.PutUint32(b[64:], p.uid)              // so_uid
	le.PutUint32(b[68:], uint32(p.pid))      // so_last_pid
	le.PutUint32(b[72:], uint32(p.pid+1))    // so_e_pid
	return b
}

// xtcpcbN builds a struct xtcpcb_n (bsd/netinet/tcp_var.h).
func xtcpcbN(state uint32) []byte {
	b := record(xtcpcbNLen, xsoTcpcb)
	binary.LittleEndian.PutUint32(b[36:], state) // t_state
	return b
}

func xinpgen(count uint32, gen uint64) []byte {
	b := record(xinpgenLen, 0)
	binary.LittleEndian.PutUint32(b[4:], count) // xig_count, where the kind would be
	binary.LittleEndian.PutUint64(b[8:], gen)
	return b
}

// pcbGroupBytes is one PCB's records in the order get_pcblist_n writes them.
func pcbGroupBytes(typ uint8, p pcb) []byte {
	proto := p.proto
	if proto == 0 {
		proto = ipprotoTCP
		if typ == SOCK_DGRAM {
			proto = ipprotoUDP
		}
	}
	b := cat(pad8(xinpcbN(p)), pad8(xsocketN(p, proto)),
		record(xsockbufNLen, 0x002), record(xsockbufNLen, 0x004), record(xsockstatLen, 0x008))
	if typ == SOCK_STREAM {
		b = append(b, pad8(xtcpcbN(p.tstate))...)
	}
	return b
}

// pcbList builds a pcblist_n value with generation gen.
func pcbList(typ uint8, gen uint64, pcbs ...pcb) []byte {
	b := xinpgen(uint32(len(pcbs)), gen)
	for _, p := range pcbs {
		b = append(b, pcbGroupBytes(typ, p)...)
	}
	return append(b, xinpgen(uint32(len(pcbs)), gen+3)...)
}

var (
	macTCP = []pcb{
		{family: 2, vflag: inpIPv4, local: ap("0.0.0.0:22"), remote: ap("0.0.0.0:0"), gencnt: 5, tstate: 1, uid: 0, pid: 100},
		{family: 2, vflag: inpIPv4, local: ap("127.0.0.1:50000"), remote: ap("127.0.0.1:8000"), gencnt: 6, tstate: 4, uid: 501, pid: 200},
		// Closed by its owner: so_last_pid still names it.
		{family: 2, vflag: inpIPv4, local: ap("127.0.0.1:50001"), remote: ap("127.0.0.1:8000"), gencnt: 7, tstate: 10, soState: ssNoFdRef | 0x2000, uid: 501, pid: 200},
		// Waiting in the accept queue: no file yet, not an orphan.
		{family: 2, vflag: inpIPv4, local: ap("127.0.0.1:8000"), remote: ap("127.0.0.1:50002"), gencnt: 8, tstate: 4, soState: ssNoFdRef | 0x1000, uid: 501, pid: 300},
		// A dual-stack listener.
		{family: 30, vflag: inpIPv4 | inpIPv6, local: ap("[::]:8080"), remote: ap("[::]:0"), gencnt: 9, tstate: 1, uid: 501, pid: 300},
		// An IPv6 socket talking to an IPv4 peer.
		{family: 30, vflag: inpIPv4, local: ap("127.0.0.1:8080"), remote: ap("127.0.0.1:50003"), gencnt: 10, tstate: 5, uid: 501, pid: 300},
		{family: 30, vflag: inpIPv6, local: ap("[fe80::1]:50004"), remote: ap("[fe80::2]:22"), scope: 4, gencnt: 11, tstate: 9, uid: 501, pid: 400},
		// A flow of the user-space stack: no socket family, no generation.
		{family: 0, vflag: inpIPv6, local: ap("[2001:db8::1]:50005"), remote: ap("[2001:db8::2]:443"), tstate: 4, pid: 500},
		{family: 2, vflag: inpIPv4, local: ap("10.0.0.1:50006"), remote: ap("10.0.0.2:80"), gencnt: 12, tstate: 42, pid: 600},
	}
	macTCPWant = []Socket{
		{Family: AF_INET, Type: SOCK_STREAM, State: StateListen, Local: ap("0.0.0.0:22"), Remote: ap("0.0.0.0:0"), Cookie: 10, Pid: 100},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateEstablished, Local: ap("127.0.0.1:50000"), Remote: ap("127.0.0.1:8000"), Cookie: 12, UID: 501, Pid: 200},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateTimeWait, Local: ap("127.0.0.1:50001"), Remote: ap("127.0.0.1:8000"), Cookie: 14, UID: 501, Pid: -1, Orphan: true},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateEstablished, Local: ap("127.0.0.1:8000"), Remote: ap("127.0.0.1:50002"), Cookie: 16, UID: 501, Pid: 300},
		{Family: AF_INET6, Type: SOCK_STREAM, State: StateListen, Local: ap("[::]:8080"), Remote: ap("[::]:0"), Cookie: 18, UID: 501, Pid: 300},
		{Family: AF_INET6, Type: SOCK_STREAM, State: StateCloseWait, Local: ap("[::ffff:127.0.0.1]:8080"), Remote: ap("[::ffff:127.0.0.1]:50003"), Cookie: 20, UID: 501, Pid: 300},
		{Family: AF_INET6, Type: SOCK_STREAM, State: StateFinWait2, Local: ap("[fe80::1]:50004"), Remote: ap("[fe80::2]:22"), Cookie: 22, UID: 501, Pid: 400},
		{Family: AF_INET6, Type: SOCK_STREAM, State: StateEstablished, Local: ap("[2001:db8::1]:50005"), Remote: ap("[2001:db8::2]:443"), Pid: 500},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateUnknown, Local: ap("10.0.0.1:50006"), Remote: ap("10.0.0.2:80"), Cookie: 24, Pid: 600},
	}
	macUDP = []pcb{
		{family: 2, vflag: inpIPv4, local: ap("0.0.0.0:5353"), remote: ap("0.0.0.0:0"), gencnt: 3, pid: 77, uid: 65},
		{family: 30, vflag: inpIPv6, local: ap("[::1]:5000"), remote: ap("[::1]:53"), gencnt: 4, pid: 78, oldSocket: true},
		{family: 30, vflag: inpIPv6, local: ap("[ff02::fb]:5353"), remote: ap("[::]:0"), scope: 9, gencnt: 5},
	}
	macUDPWant = []Socket{
		{Family: AF_INET, Type: SOCK_DGRAM, State: StateClose, Local: ap("0.0.0.0:5353"), Remote: ap("0.0.0.0:0"), Cookie: 7, UID: 65, Pid: 77},
		{Family: AF_INET6, Type: SOCK_DGRAM, State: StateEstablished, Local: ap("[::1]:5000"), Remote: ap("[::1]:53"), Cookie: 9, Pid: 78},
		{Family: AF_INET6, Type: SOCK_DGRAM, State: StateClose, Local: ap("[ff02::fb]:5353"), Remote: ap("[::]:0"), Cookie: 11, Pid: -1},
	}
)

func TestParsePcbList(t *testing.T) {
	const gen = 100
	tcp := pcbList(SOCK_STREAM, gen, macTCP...)
	first := xinpgenLen + len(pcbGroupBytes(SOCK_STREAM, macTCP[0])) // offset of the second PCB
	setU32 := func(b []byte, off int, v uint32) []byte {
		b = append([]byte(nil), b...)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	one := func(typ uint8, p pcb) []byte { return pcbList(typ, gen, p) }
	group := func(typ uint8, p pcb) []byte { return pcbGroupBytes(typ, p) }
	trailer := xinpgen(1, gen)
	inp, so := pad8(xinpcbN(macTCP[1])), pad8(xsocketN(macTCP[1], ipprotoTCP))
	tp := pad8(xtcpcbN(4))

	for _, tc := range []struct {
		name string
		b    []byte
		typ  uint8
		want []Socket
		err  string
	}{
		{name: "tcp", b: tcp, typ: SOCK_STREAM, want: macTCPWant},
		{name: "udp", b: pcbList(SOCK_DGRAM, gen, macUDP...), typ: SOCK_DGRAM, want: macUDPWant},
		{name: "no pcbs", b: pcbList(SOCK_STREAM, gen), typ: SOCK_STREAM},
		{
			name: "freed during copyout skipped",
			b:    one(SOCK_STREAM, pcb{family: 2, vflag: inpIPv4, local: ap("127.0.0.1:1"), remote: ap("0.0.0.0:0"), gencnt: gen + 1, tstate: 1}),
			typ:  SOCK_STREAM,
		},
		{
			name: "other protocol skipped",
			b:    one(SOCK_STREAM, pcb{family: 2, vflag: inpIPv4, local: ap("127.0.0.1:1"), remote: ap("0.0.0.0:0"), gencnt: 1, proto: ipprotoUDP}),
			typ:  SOCK_STREAM,
		},
		{
			name: "other family skipped",
			b:    one(SOCK_DGRAM, pcb{family: 1, vflag: inpIPv4, local: ap("127.0.0.1:1"), remote: ap("0.0.0.0:0"), gencnt: 1}),
			typ:  SOCK_DGRAM,
		},
		{
			name: "no address flag skipped",
			b:    one(SOCK_DGRAM, pcb{family: 2, local: ap("127.0.0.1:1"), remote: ap("0.0.0.0:0"), gencnt: 1}),
			typ:  SOCK_DGRAM,
		},
		{
			// Later releases append fields; records are skipped by length.
			name: "longer records",
			b: cat(xinpgen(1, gen), setU32(append(inp, make([]byte, 16)...), 0, xinpcbNLen+16),
				setU32(append(so, make([]byte, 8)...), 0, xsocketNLen+8), tp, trailer),
			typ: SOCK_STREAM, want: macTCPWant[1:2],
		},
		{
			// With no socket, the kernel leaves the kind of the buffer records 0.
			name: "zero-kind records ignored",
			b:    cat(xinpgen(1, gen), inp, record(xsockbufNLen, 0), so, record(xsockbufNLen, 0), tp, trailer),
			typ:  SOCK_STREAM, want: macTCPWant[1:2],
		},
		{name: "nil", b: nil, typ: SOCK_STREAM, err: "truncated"},
		{name: "short header", b: tcp[:20], typ: SOCK_STREAM, err: "truncated"},
		{name: "header length too small", b: setU32(tcp, 0, 16), typ: SOCK_STREAM, err: "bad xinpgen length 16"},
		{name: "header length too large", b: setU32(tcp[:100], 0, 200), typ: SOCK_STREAM, err: "bad xinpgen length 200"},
		{name: "header only", b: tcp[:xinpgenLen], typ: SOCK_STREAM, err: "truncated"},
		{name: "no trailer", b: tcp[:len(tcp)-xinpgenLen], typ: SOCK_STREAM, want: macTCPWant[:len(macTCPWant)-1], err: "truncated"},
		// The PCB being read when the error comes is not reported.
		{name: "record overruns", b: tcp[:first+50], typ: SOCK_STREAM, err: "truncated"},
		{name: "record length below 8", b: setU32(tcp, first, 4), typ: SOCK_STREAM, err: "bad record length 4"},
		{name: "record length past the end", b: setU32(tcp, first, 1<<31), typ: SOCK_STREAM, err: "truncated"},
		{
			name: "error keeps what came before",
			b:    setU32(tcp, first+len(pcbGroupBytes(SOCK_STREAM, macTCP[1])), 4),
			typ:  SOCK_STREAM, want: macTCPWant[:1], err: "bad record length 4",
		},
		{name: "socket before pcb", b: cat(xinpgen(1, gen), so, inp, tp, trailer), typ: SOCK_STREAM, err: "unexpected xsocket_n"},
		{name: "socket twice", b: cat(xinpgen(1, gen), inp, so, so, tp, trailer), typ: SOCK_STREAM, err: "unexpected xsocket_n"},
		{name: "tcpcb twice", b: cat(xinpgen(1, gen), inp, so, tp, tp, trailer), typ: SOCK_STREAM, err: "unexpected xtcpcb_n"},
		{name: "tcp pcb without tcpcb", b: cat(xinpgen(1, gen), inp, so, trailer), typ: SOCK_STREAM, err: "incomplete"},
		{
			name: "pcb without socket, then another",
			b:    cat(xinpgen(1, gen), inp, tp, group(SOCK_STREAM, macTCP[0]), trailer),
			typ:  SOCK_STREAM, err: "incomplete",
		},
		{name: "short xinpcb_n", b: cat(xinpgen(1, gen), record(64, xsoInpcb), so, tp, trailer), typ: SOCK_STREAM, err: "xinpcb_n of 64 bytes"},
		{name: "short xsocket_n", b: cat(xinpgen(1, gen), inp, record(72, xsoSocket), tp, trailer), typ: SOCK_STREAM, err: "xsocket_n of 72 bytes"},
		{name: "short xtcpcb_n", b: cat(xinpgen(1, gen), inp, so, record(32, xsoTcpcb), trailer), typ: SOCK_STREAM, err: "xtcpcb_n of 32 bytes"},
		{name: "unsupported type", b: tcp, typ: 3, err: "type 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []Socket{{Pid: 42}}
			got, err := ParsePcbList(tc.b, tc.typ, prefix)
			checkErr(t, err, tc.err)
			checkAppended(t, got, prefix, tc.want)
		})
	}
}

// The layout the fixtures use, checked against offsets computed by a C
// compiler from XNU's declarations.
func TestPcbListLayout(t *testing.T) {
	p := macTCP[5]
	inp, so := xinpcbN(p), xsocketN(p, ipprotoTCP)
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"sizeof(xinpcb_n)", len(inp), 104},
		{"sizeof(xsocket_n)", len(so), 104},
		{"xinpcb_n.inp_gencnt", xiGencnt, 28},
		{"xinpcb_n.inp_vflag", xiVflag, 44},
		{"xinpcb_n.inp_dependfaddr", xiFaddr, 48},
		{"xinpcb_n.inp_dependladdr", xiLaddr, 64},
		{"xsocket_n.so_state", xsoState, 26},
		{"xsocket_n.xso_protocol", xsoProtocol, 36},
		{"xsocket_n.xso_family", xsoFamily, 40},
		{"xsocket_n.so_uid", xsoUID, 64},
		{"xsocket_n.so_last_pid", xsoLastPid, 68},
		{"xtcpcb_n.t_state", xtState, 36},
		{"one TCP item", len(pcbGroupBytes(SOCK_STREAM, p)), 104 + 104 + 32 + 32 + 136 + 208},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestParsePcbListAllocs(t *testing.T) {
	pcbs := make([]pcb, 1000)
	for i := range pcbs {
		pcbs[i] = macTCP[6]
		pcbs[i].gencnt = uint64(i + 1)
	}
	b := pcbList(SOCK_STREAM, 2000, pcbs...)
	dst := make([]Socket, 0, len(pcbs))
	allocs := testing.AllocsPerRun(10, func() {
		if got, err := ParsePcbList(b, SOCK_STREAM, dst[:0]); err != nil || len(got) != len(pcbs) {
			t.Fatal(len(got), err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per parse", allocs)
	}
}

func FuzzParsePcbList(f *testing.F) {
	f.Add(pcbList(SOCK_STREAM, 100, macTCP...), false)
	f.Add(pcbList(SOCK_DGRAM, 100, macUDP...), true)
	f.Fuzz(func(t *testing.T, b []byte, udp bool) {
		typ := uint8(SOCK_STREAM)
		if udp {
			typ = SOCK_DGRAM
		}
		prefix := []Socket{{Pid: 42}}
		got, _ := ParsePcbList(b, typ, prefix)
		if len(got) == 0 || got[0] != prefix[0] {
			t.Fatalf("dst prefix lost: %+v", got)
		}
		// A PCB takes at least an xinpcb_n and an xsocket_n.
		if len(got)-1 > len(b)/(xiMinLen+xsoMinLen) {
			t.Fatalf("%d sockets from %d bytes", len(got)-1, len(b))
		}
		for _, s := range got[1:] {
			checkOSSocket(t, s, s.Family, typ)
			if s.Family != AF_INET && s.Family != AF_INET6 {
				t.Fatalf("bad family in %+v", s)
			}
			if s.Cookie != 0 && (s.Cookie&1 == 1) != udp {
				t.Fatalf("cookie %#x not tagged with the protocol: %+v", s.Cookie, s)
			}
		}
	})
}

func BenchmarkParsePcbList(b *testing.B) {
	pcbs := make([]pcb, 1000)
	for i := range pcbs {
		pcbs[i] = macTCP[6]
		pcbs[i].gencnt = uint64(i + 1)
	}
	list := pcbList(SOCK_STREAM, 2000, pcbs...)
	dst := make([]Socket, 0, len(pcbs))
	b.SetBytes(int64(len(list)))
	for b.Loop() {
		if _, err := ParsePcbList(list, SOCK_STREAM, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
}
