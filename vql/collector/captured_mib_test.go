package collector

import (
	"testing"
)

// testdata/mib_*.bin were captured by TestCapture (live_windows_test.go)
// under Wine 8.0 in a network namespace holding only its sockets: the
// tables GetExtendedTcpTable / GetExtendedUdpTable wrote, byte for byte.
// Wine is an independent implementation of the same ABI, so these check
// the layouts against something other than our reading of the headers.
// Wine names the owner (PID 32, the test) of the outbound IPv4 connection
// only and reports PID 0 for the rest, which Windows does not.
var capturedMibTables = []struct {
	name        string
	family, typ uint8
	want        []Socket
}{
	{"tcp", AF_INET, SOCK_STREAM, []Socket{
		{State: StateListen, Local: ap("127.0.0.1:44903"), Remote: ap("0.0.0.0:0"), Pid: -1},
		{State: StateEstablished, Local: ap("127.0.0.1:33999"), Remote: ap("127.0.0.1:44903"), Pid: 32},
		{State: StateEstablished, Local: ap("127.0.0.1:44903"), Remote: ap("127.0.0.1:33999"), Pid: -1, Orphan: true},
		{State: StateTimeWait, Local: ap("127.0.0.1:37755"), Remote: ap("127.0.0.1:46713"), Pid: -1, Orphan: true},
	}},
	{"tcp6", AF_INET6, SOCK_STREAM, []Socket{
		{State: StateListen, Local: ap("[::1]:37979"), Remote: ap("[::]:0"), Pid: -1},
		{State: StateEstablished, Local: ap("[::1]:37979"), Remote: ap("[::1]:33861"), Pid: -1, Orphan: true},
		{State: StateEstablished, Local: ap("[::1]:33861"), Remote: ap("[::1]:37979"), Pid: -1, Orphan: true},
	}},
	{"udp", AF_INET, SOCK_DGRAM, []Socket{
		{State: StateClose, Local: ap("127.0.0.1:58900"), Remote: ap("0.0.0.0:0"), Pid: -1},
	}},
	{"udp6", AF_INET6, SOCK_DGRAM, []Socket{
		// Wine fills dwLocalScopeId with 0x1000 here; it is dropped.
		{State: StateClose, Local: ap("[::1]:53461"), Remote: ap("[::]:0"), Pid: -1},
	}},
}

func TestCapturedMib(t *testing.T) {
	for _, tc := range capturedMibTables {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []Socket{{Pid: 42}}
			got, err := ParseMibTable(readTestdata(t, "mib_"+tc.name+".bin"), tc.family, tc.typ, prefix)
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != prefix[0] {
				t.Errorf("dst[0] overwritten: %+v", got[0])
			}
			got = got[1:]
			if len(got) != len(tc.want) {
				t.Fatalf("%d sockets, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, w := range tc.want {
				w.Family, w.Type = tc.family, tc.typ
				if got[i] != w {
					t.Errorf("socket %d:\n got  %+v\n want %+v", i, got[i], w)
				}
			}
		})
	}
}
