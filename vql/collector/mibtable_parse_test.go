package collector

import (
	"encoding/binary"
	"encoding/hex"
	"math/bits"
	"net/netip"
	"testing"
)

// mibRow is one row of a MIB_*TABLE_OWNER_PID as Windows fills it.
type mibRow struct {
	state         uint32 // MIB_TCP_STATE; TCP only
	local, remote netip.AddrPort
	pid           uint32
	scope         uint32 // dwLocalScopeId / dwRemoteScopeId; IPv6 only
	// What Windows may leave in the upper 16 bits of a port DWORD.
	portJunk uint16
}

// mibPortDWORD is the DWORD a row holds for port on little-endian Windows:
// htons(port) in the low 16 bits.
func mibPortDWORD(port, junk uint16) uint32 {
	return uint32(junk)<<16 | uint32(bits.ReverseBytes16(port))
}

// mibTable lays rows out as tcpmib.h / udpmib.h declare them: a DWORD
// count, then the rows, all little-endian.
func mibTable(family, typ uint8, rows ...mibRow) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(len(rows)))
	for _, r := range rows {
		la, ra := r.local.Addr().AsSlice(), r.remote.Addr().AsSlice()
		lp, rp := mibPortDWORD(r.local.Port(), r.portJunk), mibPortDWORD(r.remote.Port(), r.portJunk)
		switch {
		case family == AF_INET && typ == SOCK_STREAM: // MIB_TCPROW_OWNER_PID
			b = le.AppendUint32(b, r.state)
			b = append(b, la...)
			b = le.AppendUint32(b, lp)
			b = append(b, ra...)
			b = le.AppendUint32(b, rp)
			b = le.AppendUint32(b, r.pid)
		case family == AF_INET6 && typ == SOCK_STREAM: // MIB_TCP6ROW_OWNER_PID
			b = append(b, la...)
			b = le.AppendUint32(b, r.scope)
			b = le.AppendUint32(b, lp)
			b = append(b, ra...)
			b = le.AppendUint32(b, r.scope)
			b = le.AppendUint32(b, rp)
			b = le.AppendUint32(b, r.state)
			b = le.AppendUint32(b, r.pid)
		case family == AF_INET && typ == SOCK_DGRAM: // MIB_UDPROW_OWNER_PID
			b = append(b, la...)
			b = le.AppendUint32(b, lp)
			b = le.AppendUint32(b, r.pid)
		default: // MIB_UDP6ROW_OWNER_PID
			b = append(b, la...)
			b = le.AppendUint32(b, r.scope)
			b = le.AppendUint32(b, lp)
			b = le.AppendUint32(b, r.pid)
		}
	}
	return b
}

var (
	ap     = netip.MustParseAddrPort
	any4   = ap("0.0.0.0:0")
	any6   = ap("[::]:0")
	winTCP = []mibRow{
		{state: 2, local: ap("0.0.0.0:135"), remote: ap("0.0.0.0:0"), pid: 1104},
		// A listener's remote fields mean nothing and may hold junk.
		{state: 2, local: ap("127.0.0.1:8000"), remote: ap("0.0.0.1:16953"), pid: 4},
		{state: 5, local: ap("127.0.0.1:50001"), remote: ap("127.0.0.1:8000"), pid: 7312, portJunk: 0xbeef},
		{state: 11, local: ap("10.0.0.5:50002"), remote: ap("93.184.216.34:443")}, // TIME_WAIT, PID 0
		{state: 3, local: ap("10.0.0.5:50003"), remote: ap("10.0.0.9:22"), pid: 7312},
		{state: 12, local: ap("10.0.0.5:50004"), remote: ap("10.0.0.9:22"), pid: 7312},
		{state: 100, local: ap("10.0.0.5:50005"), remote: ap("0.0.0.0:0"), pid: 8},
	}
	winTCPWant = []Socket{
		{Family: AF_INET, Type: SOCK_STREAM, State: StateListen, Local: ap("0.0.0.0:135"), Remote: any4, Pid: 1104},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateListen, Local: ap("127.0.0.1:8000"), Remote: any4, Pid: 4},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateEstablished, Local: ap("127.0.0.1:50001"), Remote: ap("127.0.0.1:8000"), Pid: 7312},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateTimeWait, Local: ap("10.0.0.5:50002"), Remote: ap("93.184.216.34:443"), Pid: -1, Orphan: true},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateSynSent, Local: ap("10.0.0.5:50003"), Remote: ap("10.0.0.9:22"), Pid: 7312},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateClose, Local: ap("10.0.0.5:50004"), Remote: ap("10.0.0.9:22"), Pid: 7312},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateUnknown, Local: ap("10.0.0.5:50005"), Remote: any4, Pid: 8},
	}
	winTCP6 = []mibRow{
		{state: 2, local: ap("[::]:445"), remote: ap("[::]:0"), pid: 4},
		{state: 5, local: ap("[fe80::1]:50010"), remote: ap("[fe80::2]:445"), pid: 2212, scope: 12},
		{state: 8, local: ap("[::1]:8000"), remote: ap("[::1]:50011"), pid: 916},
		{state: 7, local: ap("[2001:db8::5]:50012"), remote: ap("[2001:db8::9]:443")}, // FIN_WAIT2 after close(): PID 0
		{state: 2, local: ap("[::1]:9000"), remote: ap("[::1]:9000")},                 // a listener without owner
	}
	winTCP6Want = []Socket{
		{Family: AF_INET6, Type: SOCK_STREAM, State: StateListen, Local: ap("[::]:445"), Remote: any6, Pid: 4},
		{Family: AF_INET6, Type: SOCK_STREAM, State: StateEstablished, Local: ap("[fe80::1]:50010"), Remote: ap("[fe80::2]:445"), Pid: 2212},
		{Family: AF_INET6, Type: SOCK_STREAM, State: StateCloseWait, Local: ap("[::1]:8000"), Remote: ap("[::1]:50011"), Pid: 916},
		{Family: AF_INET6, Type: SOCK_STREAM, State: StateFinWait2, Local: ap("[2001:db8::5]:50012"), Remote: ap("[2001:db8::9]:443"), Pid: -1, Orphan: true},
		{Family: AF_INET6, Type: SOCK_STREAM, State: StateListen, Local: ap("[::1]:9000"), Remote: any6, Pid: -1},
	}
	winUDP = []mibRow{
		{local: ap("0.0.0.0:5353"), pid: 2064, portJunk: 0xffff},
		{local: ap("127.0.0.1:53"), pid: 0},
	}
	winUDPWant = []Socket{
		{Family: AF_INET, Type: SOCK_DGRAM, State: StateClose, Local: ap("0.0.0.0:5353"), Remote: any4, Pid: 2064},
		{Family: AF_INET, Type: SOCK_DGRAM, State: StateClose, Local: ap("127.0.0.1:53"), Remote: any4, Pid: -1},
	}
	winUDP6 = []mibRow{
		{local: ap("[::]:5353"), pid: 2064},
		{local: ap("[fe80::1]:546"), pid: 1300, scope: 7},
	}
	winUDP6Want = []Socket{
		{Family: AF_INET6, Type: SOCK_DGRAM, State: StateClose, Local: ap("[::]:5353"), Remote: any6, Pid: 2064},
		{Family: AF_INET6, Type: SOCK_DGRAM, State: StateClose, Local: ap("[fe80::1]:546"), Remote: any6, Pid: 1300},
	}
)

// The row sizes and offsets come from the SDK headers; a table written out
// byte by byte keeps the builder above honest.
func TestParseMibTableLiteral(t *testing.T) {
	b, _ := hex.DecodeString("02000000" +
		// MIB_TCPROW_OWNER_PID: ESTAB 127.0.0.1:50001 -> 127.0.0.1:8000, PID 7312
		"05000000" + "7f000001" + "c3510000" + "7f000001" + "1f40efbe" + "901c0000" +
		// TIME_WAIT 10.0.0.5:443 -> 192.0.2.1:1024, PID 0
		"0b000000" + "0a000005" + "01bb0000" + "c0000201" + "04000000" + "00000000")
	got, err := ParseMibTable(b, AF_INET, SOCK_STREAM, nil)
	want := []Socket{
		{Family: AF_INET, Type: SOCK_STREAM, State: StateEstablished, Local: ap("127.0.0.1:50001"), Remote: ap("127.0.0.1:8000"), Pid: 7312},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateTimeWait, Local: ap("10.0.0.5:443"), Remote: ap("192.0.2.1:1024"), Pid: -1, Orphan: true},
	}
	if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, err %v", got, err)
	}

	b, _ = hex.DecodeString("01000000" +
		// MIB_UDP6ROW_OWNER_PID: [::1]:53, scope 0, PID 4
		"00000000000000000000000000000001" + "00000000" + "00350000" + "04000000")
	got, err = ParseMibTable(b, AF_INET6, SOCK_DGRAM, nil)
	w := Socket{Family: AF_INET6, Type: SOCK_DGRAM, State: StateClose, Local: ap("[::1]:53"), Remote: any6, Pid: 4}
	if err != nil || len(got) != 1 || got[0] != w {
		t.Errorf("got %+v, err %v", got, err)
	}
}

func TestParseMibTable(t *testing.T) {
	withCount := func(b []byte, n uint32) []byte {
		b = append([]byte(nil), b...)
		binary.LittleEndian.PutUint32(b, n)
		return b
	}
	tcp := mibTable(AF_INET, SOCK_STREAM, winTCP...)
	for _, tc := range []struct {
		name        string
		b           []byte
		family, typ uint8
		want        []Socket
		err         string
	}{
		{name: "tcp", b: tcp, family: AF_INET, typ: SOCK_STREAM, want: winTCPWant},
		{name: "tcp6", b: mibTable(AF_INET6, SOCK_STREAM, winTCP6...), family: AF_INET6, typ: SOCK_STREAM, want: winTCP6Want},
		{name: "udp", b: mibTable(AF_INET, SOCK_DGRAM, winUDP...), family: AF_INET, typ: SOCK_DGRAM, want: winUDPWant},
		{name: "udp6", b: mibTable(AF_INET6, SOCK_DGRAM, winUDP6...), family: AF_INET6, typ: SOCK_DGRAM, want: winUDP6Want},
		{name: "empty table", b: mibTable(AF_INET, SOCK_STREAM), family: AF_INET, typ: SOCK_STREAM},
		{
			// The buffer the table was written to is usually larger.
			name: "trailing bytes", b: append(mibTable(AF_INET6, SOCK_DGRAM, winUDP6...), make([]byte, 100)...),
			family: AF_INET6, typ: SOCK_DGRAM, want: winUDP6Want,
		},
		{name: "fewer rows than room", b: withCount(tcp, 3), family: AF_INET, typ: SOCK_STREAM, want: winTCPWant[:3]},
		{name: "nil", b: nil, family: AF_INET, typ: SOCK_STREAM, err: "no row count"},
		{name: "short count", b: []byte{1, 0, 0}, family: AF_INET, typ: SOCK_STREAM, err: "no row count"},
		{name: "count past the end", b: withCount(tcp, uint32(len(winTCP)+1)), family: AF_INET, typ: SOCK_STREAM, err: "claims 8 rows"},
		{name: "huge count", b: withCount(tcp, 0xffffffff), family: AF_INET, typ: SOCK_STREAM, err: "claims 4294967295 rows"},
		{name: "last row cut", b: tcp[:len(tcp)-1], family: AF_INET, typ: SOCK_STREAM, err: "claims 7 rows"},
		{
			// An IPv4 table read as IPv6: 7*24 bytes hold 3 rows of 56.
			name: "wrong family", b: tcp, family: AF_INET6, typ: SOCK_STREAM, err: "claims 7 rows (396 bytes)",
		},
		{name: "unknown family", b: tcp, family: 3, typ: SOCK_STREAM, err: "family 3"},
		{name: "unknown type", b: tcp, family: AF_INET, typ: 5, err: "type 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []Socket{{Pid: 42}}
			got, err := ParseMibTable(tc.b, tc.family, tc.typ, prefix)
			checkErr(t, err, tc.err)
			checkAppended(t, got, prefix, tc.want)
		})
	}
}

func TestParseMibTableAllocs(t *testing.T) {
	rows := make([]mibRow, 1000)
	for i := range rows {
		rows[i] = winTCP6[1]
		rows[i].local = netip.AddrPortFrom(rows[i].local.Addr(), uint16(i))
	}
	b := mibTable(AF_INET6, SOCK_STREAM, rows...)
	dst := make([]Socket, 0, len(rows))
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := ParseMibTable(b, AF_INET6, SOCK_STREAM, dst[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per parse", allocs)
	}
}

func FuzzParseMibTable(f *testing.F) {
	f.Add(mibTable(AF_INET, SOCK_STREAM, winTCP...), false, false)
	f.Add(mibTable(AF_INET6, SOCK_STREAM, winTCP6...), true, false)
	f.Add(mibTable(AF_INET, SOCK_DGRAM, winUDP...), false, true)
	f.Add(mibTable(AF_INET6, SOCK_DGRAM, winUDP6...), true, true)
	f.Fuzz(func(t *testing.T, b []byte, v6, udp bool) {
		family, typ := uint8(AF_INET), uint8(SOCK_STREAM)
		if v6 {
			family = AF_INET6
		}
		if udp {
			typ = SOCK_DGRAM
		}
		rowLen, _ := mibRowLen(family, typ)
		prefix := []Socket{{Pid: 42}}
		got, err := ParseMibTable(b, family, typ, prefix)
		if len(got) == 0 || got[0] != prefix[0] {
			t.Fatalf("dst prefix lost: %+v", got)
		}
		if err != nil {
			if len(got) != 1 {
				t.Fatalf("%d sockets appended with error %v", len(got)-1, err)
			}
			return
		}
		if n := binary.LittleEndian.Uint32(b); uint32(len(got)-1) != n || mibTableHdrLen+len(got[1:])*rowLen > len(b) {
			t.Fatalf("%d sockets for count %d in %d bytes", len(got)-1, n, len(b))
		}
		for _, s := range got[1:] {
			checkOSSocket(t, s, family, typ)
		}
	})
}

// checkOSSocket asserts what holds for every socket the Windows and macOS
// parsers return, whose owner comes with the socket.
func checkOSSocket(t *testing.T, s Socket, family, typ uint8) {
	t.Helper()
	if s.Family != family || s.Type != typ || s.Inode != 0 || s.Pid == 0 || s.Pid < -1 {
		t.Fatalf("bad socket %+v", s)
	}
	for _, a := range []netip.AddrPort{s.Local, s.Remote} {
		if !a.IsValid() || a.Addr().Zone() != "" || a.Addr().Is4() != (family == AF_INET) {
			t.Fatalf("bad address %v in %+v", a, s)
		}
	}
	if s.Orphan && (s.Pid != -1 || typ != SOCK_STREAM || s.State == StateListen) {
		t.Fatalf("bad orphan %+v", s)
	}
	if typ == SOCK_STREAM && s.State == StateListen && (s.Remote.Port() != 0 || !s.Remote.Addr().IsUnspecified()) {
		t.Fatalf("listener with a peer: %+v", s)
	}
}

func BenchmarkParseMibTable(b *testing.B) {
	rows := make([]mibRow, 1000)
	for i := range rows {
		rows[i] = winTCP6[1]
		rows[i].local = netip.AddrPortFrom(rows[i].local.Addr(), uint16(i))
	}
	table := mibTable(AF_INET6, SOCK_STREAM, rows...)
	dst := make([]Socket, 0, len(rows))
	b.SetBytes(int64(len(table)))
	for b.Loop() {
		if _, err := ParseMibTable(table, AF_INET6, SOCK_STREAM, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
}
