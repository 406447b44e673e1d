package collector

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// The records in testdata/ were captured by TestCapture on little-endian
// x86-64 (Linux 6.18), in a network namespace holding only these sockets.
// netlink_*.bin are the raw replies to one dump request; proc_net_* the
// /proc/net files read at the same moment.

type capturedSocket struct {
	local, remote string
	state         State
	inode         uint64
	cookie        uint64 // netlink only
}

var capturedTables = []struct {
	name        string
	family, typ uint8
	socks       []capturedSocket
}{
	{"tcp4", AF_INET, SOCK_STREAM, []capturedSocket{
		{"127.0.0.1:34547", "0.0.0.0:0", StateListen, 31534, 0x8},
		// Waiting in the accept queue: no file yet, but not an orphan.
		{"127.0.0.1:34547", "127.0.0.1:36766", StateEstablished, 0, 0x16},
		{"127.0.0.1:56030", "127.0.0.1:42337", StateEstablished, 31556, 0x17},
		{"127.0.0.1:36724", "127.0.0.1:34547", StateEstablished, 31538, 0xa},
		{"127.0.0.1:36740", "127.0.0.1:34547", StateTimeWait, 0, 0xb},
		{"127.0.0.1:36750", "127.0.0.1:34547", StateFinWait2, 0, 0xd},
		{"127.0.0.1:36766", "127.0.0.1:34547", StateEstablished, 31544, 0x18},
		{"127.0.0.1:34547", "127.0.0.1:36724", StateEstablished, 31539, 0xc},
		{"127.0.0.1:34547", "127.0.0.1:36750", StateCloseWait, 31543, 0xe},
	}},
	{"tcp6", AF_INET6, SOCK_STREAM, []capturedSocket{
		{"[::1]:36401", "[::]:0", StateListen, 31545, 0xf},
		{"[::]:42337", "[::]:0", StateListen, 31554, 0x19},
		{"[::1]:36401", "[::1]:48770", StateCloseWait, 31552, 0x14},
		{"[::1]:36401", "[::1]:48782", StateEstablished, 0, 0x1a},
		// An IPv4 peer of the dual-stack listener stays IPv4-mapped.
		{"[::ffff:127.0.0.1]:42337", "[::ffff:127.0.0.1]:56030", StateEstablished, 31557, 0x1b},
		{"[::1]:36401", "[::1]:48756", StateEstablished, 31548, 0x10},
		{"[::1]:48756", "[::1]:36401", StateEstablished, 31547, 0x12},
		{"[::1]:48762", "[::1]:36401", StateTimeWait, 0, 0x13},
		{"[::1]:48770", "[::1]:36401", StateFinWait2, 0, 0x15},
		{"[::1]:48782", "[::1]:36401", StateEstablished, 31553, 0x1c},
	}},
	// The kernel gives UDP sockets TCP states: CLOSE unconnected, ESTAB
	// connected.
	{"udp4", AF_INET, SOCK_DGRAM, []capturedSocket{
		{"127.0.0.1:53703", "0.0.0.0:0", StateClose, 31558, 0x1d},
		{"127.0.0.1:59491", "127.0.0.1:53703", StateEstablished, 31559, 0x1e},
	}},
	{"udp6", AF_INET6, SOCK_DGRAM, []capturedSocket{
		{"[::1]:32898", "[::1]:34615", StateEstablished, 31561, 0x1f},
		{"[::1]:34615", "[::]:0", StateClose, 31560, 0x20},
	}},
}

func skipIfBigEndian(t *testing.T) {
	t.Helper()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("records captured on a little-endian host")
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (c capturedSocket) socket(family, typ uint8, withCookie bool) Socket {
	s := Socket{
		Family: family,
		Type:   typ,
		State:  c.state,
		Local:  netip.MustParseAddrPort(c.local),
		Remote: netip.MustParseAddrPort(c.remote),
		Inode:  c.inode,
		Pid:    -1,
		Orphan: c.state == StateTimeWait || c.state == StateFinWait2,
	}
	if withCookie {
		s.Cookie = c.cookie
	}
	return s
}

func TestCaptured(t *testing.T) {
	skipIfBigEndian(t)
	for _, tc := range capturedTables {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []Socket{{Pid: 42}}
			nl, done, err := ParseInetDiag(readTestdata(t, "netlink_"+tc.name+".bin"), tc.typ, prefix)
			if err != nil || !done {
				t.Fatalf("netlink: done %v, err %v", done, err)
			}
			checkCaptured(t, "netlink", nl, prefix, tc.socks, tc.family, tc.typ, true)

			pn, skipped, err := ParseProcNet(readTestdata(t, "proc_net_"+tc.name), tc.family, tc.typ, prefix)
			if err != nil || skipped != 0 {
				t.Fatalf("procfs: skipped %d, err %v", skipped, err)
			}
			checkCaptured(t, "procfs", pn, prefix, tc.socks, tc.family, tc.typ, false)
		})
	}
}

func checkCaptured(t *testing.T, backend string, got, prefix []Socket, want []capturedSocket, family, typ uint8, withCookie bool) {
	t.Helper()
	if got[0] != prefix[0] {
		t.Errorf("%s: dst[0] overwritten: %+v", backend, got[0])
	}
	got = got[len(prefix):]
	if len(got) != len(want) {
		t.Errorf("%s: %d sockets, want %d", backend, len(got), len(want))
	}
	for _, w := range want {
		ws := w.socket(family, typ, withCookie)
		s := find(got, ws.Kind(), ws.Local, ws.Remote)
		if s == nil {
			t.Errorf("%s: %s -> %s missing", backend, w.local, w.remote)
		} else if *s != ws {
			t.Errorf("%s: got  %+v\nwant %+v", backend, *s, ws)
		}
	}
}

func find(socks []Socket, kind Kind, local, remote netip.AddrPort) *Socket {
	for i := range socks {
		s := &socks[i]
		if s.Kind() == kind && s.Local == local && s.Remote == remote {
			return s
		}
	}
	return nil
}
