package collector

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

const (
	tcpHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	udpHeader = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
)

// hexAddrPort writes an address as the kernel does: 32-bit words in host
// byte order, so that the tests hold on either byte order.
func hexAddrPort(ap netip.AddrPort) string {
	var sb strings.Builder
	b := ap.Addr().AsSlice()
	for i := 0; i < len(b); i += 4 {
		fmt.Fprintf(&sb, "%08X", binary.NativeEndian.Uint32(b[i:]))
	}
	fmt.Fprintf(&sb, ":%04X", ap.Port())
	return sb.String()
}

// procRow formats s the way tcp4_seq_show does.
func procRow(sl int, s Socket) string {
	return fmt.Sprintf("%4d: %s %s %02X 00000000:00000000 00:00000000 00000000 %5d        0 %d 1 0000000000000000 100 0 0 10 0\n",
		sl, hexAddrPort(s.Local), hexAddrPort(s.Remote), uint8(s.State), s.UID, s.Inode)
}

func noCookie(s Socket) Socket { s.Cookie = 0; return s }

func TestParseProcNetLiteral(t *testing.T) {
	skipIfBigEndian(t)
	b := tcpHeader +
		"   0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0\n" +
		// A TIME_WAIT row, shorter: get_timewait4_sock.
		"   1: 0100007F:9C40 0100007F:0050 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000\n"
	got, skipped, err := ParseProcNet([]byte(b), AF_INET, SOCK_STREAM, nil)
	want := []Socket{
		{Family: AF_INET, Type: SOCK_STREAM, State: StateListen, Local: netip.MustParseAddrPort("127.0.0.1:80"),
			Remote: netip.MustParseAddrPort("0.0.0.0:0"), Inode: 12345, UID: 1000, Pid: -1},
		{Family: AF_INET, Type: SOCK_STREAM, State: StateTimeWait, Local: netip.MustParseAddrPort("127.0.0.1:40000"),
			Remote: netip.MustParseAddrPort("127.0.0.1:80"), Pid: -1, Orphan: true},
	}
	if err != nil || skipped != 0 || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, skipped %d, err %v", got, skipped, err)
	}

	b = udpHeader +
		"  411: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 777 2 0000000000000000 0\n" +
		"  412: 0000000000000000FFFF00000100007F:0035 0000000000000000FFFF00000200007F:D431 01 00000000:00000000 00:00000000 00000000   101        0 778 2 0000000000000000 0\n"
	got, skipped, err = ParseProcNet([]byte(b), AF_INET6, SOCK_DGRAM, nil)
	want = []Socket{
		{Family: AF_INET6, Type: SOCK_DGRAM, State: StateClose, Local: netip.MustParseAddrPort("[::1]:53"),
			Remote: netip.MustParseAddrPort("[::]:0"), Inode: 777, UID: 101, Pid: -1},
		{Family: AF_INET6, Type: SOCK_DGRAM, State: StateEstablished, Local: netip.MustParseAddrPort("[::ffff:127.0.0.1]:53"),
			Remote: netip.MustParseAddrPort("[::ffff:127.0.0.2]:54321"), Inode: 778, UID: 101, Pid: -1},
	}
	if err != nil || skipped != 0 || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, skipped %d, err %v", got, skipped, err)
	}
}

func TestParseProcNet(t *testing.T) {
	good4 := procRow(0, tcpListen) + procRow(1, tcpTimeWait)
	want4 := []Socket{noCookie(tcpListen), noCookie(tcpTimeWait)}
	// A row is "sl local remote st tx:rx tr:when retrnsmt uid timeout inode".
	bad := []string{
		"   5: garbage\n",
		"   5 " + procRow(0, tcpListen)[6:],                                           // sl without colon
		strings.Replace(procRow(5, tcpListen), "0A", "1FF", 1),                        // state too large
		strings.Replace(procRow(5, tcpListen), "0050", "005", 1),                      // short port
		strings.Replace(procRow(5, tcpListen), "0050", "00G0", 1),                     // not hex
		strings.Replace(procRow(5, tcpListen), " 1000 ", " 4294967296 ", 1),           // uid overflow
		strings.Replace(procRow(5, tcpListen), " 1234 ", " 1234x ", 1),                // bad inode
		strings.Replace(procRow(5, tcpListen), " 1234 ", " 99999999999999999999 ", 1), // inode overflow
		procRow(5, tcp6Estab),                                                         // an IPv6 row in an IPv4 table
		procRow(5, tcpListen)[:60] + "\n",
	}
	for _, tc := range []struct {
		name    string
		b       string
		family  uint8
		want    []Socket
		skipped int
		err     string
	}{
		{name: "header only", b: tcpHeader, family: AF_INET},
		{name: "header without newline", b: strings.TrimSuffix(udpHeader, "\n"), family: AF_INET},
		{name: "rows", b: tcpHeader + good4, family: AF_INET, want: want4},
		{name: "no final newline", b: tcpHeader + strings.TrimSuffix(good4, "\n"), family: AF_INET, want: want4},
		{name: "blank lines", b: tcpHeader + "\n" + good4 + "  \n", family: AF_INET, want: want4},
		{
			name: "ipv6", b: tcpHeader + procRow(0, tcp6Estab), family: AF_INET6,
			want: []Socket{noCookie(tcp6Estab)},
		},
		{
			name:   "malformed rows skipped and counted",
			b:      tcpHeader + procRow(0, tcpListen) + strings.Join(bad, "") + procRow(1, tcpTimeWait),
			family: AF_INET, want: want4, skipped: len(bad),
		},
		{name: "empty", b: "", family: AF_INET, err: "missing header"},
		{name: "no header", b: good4, family: AF_INET, err: "missing header"},
		{name: "bad family", b: tcpHeader, family: 3, err: "family 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []Socket{{Pid: 42}}
			got, skipped, err := ParseProcNet([]byte(tc.b), tc.family, SOCK_STREAM, prefix)
			checkErr(t, err, tc.err)
			if skipped != tc.skipped {
				t.Errorf("skipped %d rows, want %d", skipped, tc.skipped)
			}
			checkAppended(t, got, prefix, tc.want)
		})
	}
}

func TestParseProcNetAllocs(t *testing.T) {
	var b strings.Builder
	b.WriteString(tcpHeader)
	for i := range 1000 {
		s := tcpListen
		s.Local = netip.AddrPortFrom(s.Local.Addr(), uint16(i))
		b.WriteString(procRow(i, s))
	}
	in := []byte(b.String())
	dst := make([]Socket, 0, 1000)
	allocs := testing.AllocsPerRun(10, func() {
		if _, _, err := ParseProcNet(in, AF_INET, SOCK_STREAM, dst[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per parse", allocs)
	}
}

func FuzzParseProcNet(f *testing.F) {
	f.Add([]byte(tcpHeader+procRow(0, tcpListen)+procRow(1, tcpTimeWait)), false, uint8(SOCK_STREAM))
	f.Add([]byte(udpHeader+procRow(0, tcp6Estab)+"   1: junk\n"), true, uint8(SOCK_DGRAM))
	f.Fuzz(func(t *testing.T, b []byte, v6 bool, typ uint8) {
		family := uint8(AF_INET)
		if v6 {
			family = AF_INET6
		}
		prefix := []Socket{{Pid: 42}}
		got, skipped, err := ParseProcNet(b, family, typ, prefix)
		if len(got) == 0 || got[0] != prefix[0] {
			t.Fatalf("dst prefix lost: %+v", got)
		}
		if rows := strings.Count(string(b), "\n") + 1; len(got)-1+skipped > rows {
			t.Fatalf("%d sockets and %d skipped from %d lines", len(got)-1, skipped, rows)
		}
		if err != nil {
			return
		}
		for _, s := range got[1:] {
			if s.Family != family || s.Cookie != 0 {
				t.Fatalf("bad socket %+v", s)
			}
			checkSocket(t, s, typ)
		}
	})
}
