package collector

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

// addrPort converts a Go address to the kernel's view: Go shows the
// addresses of IPv4 sockets as IPv4-mapped IPv6 ones.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// checkErr checks err against a wanted substring ("" for no error).
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	if want != "" {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	} else if err != nil {
		t.Errorf("err = %v", err)
	}
}

// checkAppended checks that a parser kept what dst held (prefix) and
// appended exactly want after it.
func checkAppended(t *testing.T, got, prefix, want []Socket) {
	t.Helper()
	if len(got) < len(prefix) || got[0] != prefix[0] {
		t.Fatalf("dst prefix lost: %+v", got)
	}
	got = got[len(prefix):]
	if len(got) != len(want) {
		t.Fatalf("got %d sockets, want %d: %+v", len(got), len(want), got)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("socket %d:\n got  %+v\n want %+v", i, got[i], want[i])
		}
	}
}
