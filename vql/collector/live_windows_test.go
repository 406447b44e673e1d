//go:build windows

package collector

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/windows"
)

// These tests run on Windows, or under Wine (tools/wine/smoke.sh builds
// and runs them there): they cross-compile everywhere.

var capture = flag.Bool("capture", false, "rewrite testdata/mib_* from the live tables (run in a fresh network namespace under Wine, or on a quiet host)")

// underWine reports whether the test runs under Wine, whose tables differ
// from Windows' in one way: it names no owner (PID 0) for listening and
// accepted sockets.
func underWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

type winPair struct {
	ln             net.Listener
	client, server net.Conn
	kind           Kind
}

func (p *winPair) listenAddr() netip.AddrPort { return addrPort(p.ln.Addr()) }
func (p *winPair) clientAddr() netip.AddrPort { return addrPort(p.client.LocalAddr()) }

func tcpPair(t *testing.T, network, addr string, kind Kind) *winPair {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &winPair{ln: ln, client: c, server: s, kind: kind}
}

// udpSocket binds a UDP socket through Winsock directly: Go's
// net.ListenPacket sets SIO_UDP_CONNRESET, which Wine refuses.
func udpSocket(t *testing.T, v6 bool) netip.AddrPort {
	t.Helper()
	var sa windows.Sockaddr = &windows.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	af := windows.AF_INET
	if v6 {
		sa = &windows.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}
		af = windows.AF_INET6
	}
	fd, err := windows.Socket(af, windows.SOCK_DGRAM, windows.IPPROTO_UDP)
	if err != nil {
		t.Skipf("udp socket: %v", err)
	}
	t.Cleanup(func() { windows.Closesocket(fd) })
	if err := windows.Bind(fd, sa); err != nil {
		t.Skipf("udp bind: %v", err)
	}
	got, err := windows.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch a := got.(type) {
	case *windows.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *windows.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	t.Fatalf("getsockname: %T", got)
	return netip.AddrPort{}
}

func collectAll(t *testing.T, c Collector) []Socket {
	t.Helper()
	socks, err := c.Collect(AllKinds, nil)
	if err != nil {
		t.Fatal(err)
	}
	return socks
}

func TestLiveWindows(t *testing.T) {
	c, err := New("auto")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wine names the owner of outbound IPv4 connections only: elsewhere
	// it may report PID 0.
	wine := underWine()
	pid := int32(os.Getpid())

	for _, tc := range []struct {
		network, addr string
		kind          Kind
	}{{"tcp4", "127.0.0.1:0", TCP4}, {"tcp6", "[::1]:0", TCP6}} {
		t.Run(tc.network, func(t *testing.T) {
			p := tcpPair(t, tc.network, tc.addr, tc.kind)
			socks := collectAll(t, c)
			unspec := netip.AddrPortFrom(unspecFor(p.listenAddr().Addr()), 0)
			for _, w := range []struct {
				what          string
				local, remote netip.AddrPort
				state         State
				pid           int32
			}{
				{"listener", p.listenAddr(), unspec, StateListen, pid},
				{"client", p.clientAddr(), p.listenAddr(), StateEstablished, pid},
				{"server", p.listenAddr(), p.clientAddr(), StateEstablished, pid},
			} {
				s := find(socks, tc.kind, w.local, w.remote)
				if s == nil {
					t.Errorf("%s %s -> %s missing", w.what, w.local, w.remote)
					continue
				}
				if s.State != w.state {
					t.Errorf("%s: got %+v, want state %s", w.what, *s, w.state)
				}
				if wine && s.Pid == -1 && !(tc.kind == TCP4 && w.what == "client") {
					t.Logf("%s: Wine names no owner", w.what)
					continue
				}
				if s.Pid != w.pid || s.Orphan {
					t.Errorf("%s: got %+v, want pid %d", w.what, *s, w.pid)
				}
			}

			// The side that closes first keeps the tuple in TIME_WAIT,
			// owned by nobody (PID 0).
			local, remote := p.clientAddr(), p.listenAddr()
			p.client.Close()
			p.server.Close()
			deadline := time.Now().Add(5 * time.Second)
			for {
				s := find(collectAll(t, c), tc.kind, local, remote)
				if s != nil && s.State == StateTimeWait {
					if s.Pid != -1 || !s.Orphan || !s.Closed() {
						t.Errorf("time_wait: %+v", *s)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s -> %s never reached TIME_WAIT: %+v", local, remote, s)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}

	for _, tc := range []struct {
		name string
		v6   bool
		kind Kind
	}{{"udp4", false, UDP4}, {"udp6", true, UDP6}} {
		t.Run(tc.name, func(t *testing.T) {
			local := udpSocket(t, tc.v6)
			remote := netip.AddrPortFrom(unspecFor(local.Addr()), 0)
			s := find(collectAll(t, c), tc.kind, local, remote)
			if s == nil {
				t.Fatalf("%s missing", local)
			}
			if s.State != StateClose || s.Orphan || !s.Listening() {
				t.Errorf("got %+v", *s)
			}
			if s.Pid != pid && !(wine && s.Pid == -1) {
				t.Errorf("got %+v, want pid %d", *s, pid)
			}
		})
	}

	t.Run("kinds", func(t *testing.T) {
		socks, err := c.Collect(UDP4, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range socks {
			if s.Kind() != UDP4 {
				t.Fatalf("asked for udp4, got %+v", s)
			}
		}
	})
}

func TestNewWindows(t *testing.T) {
	for _, b := range []string{"netlink", "procfs", "ebpf"} {
		if c, err := New(b); err == nil {
			c.Close()
			t.Errorf("New(%q) succeeded", b)
		}
	}
	c, err := New("auto")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "iphlpapi" {
		t.Errorf("Name() = %q", c.Name())
	}
	c.Close()
	if _, err := c.Collect(AllKinds, nil); err == nil {
		t.Error("Collect after Close succeeded")
	}
}

func unspecFor(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// TestCapture records the four tables, holding a known set of loopback
// sockets, for the tests that parse captured tables (captured_mib_test.go).
// Run it where no other socket exists, for instance under Wine in a network
// namespace of its own (tools/wine/smoke.sh -capture), then update the
// expectations of TestCapturedMib from its log.
func TestCapture(t *testing.T) {
	if !*capture {
		t.Skip("run with -capture to rewrite testdata/mib_*")
	}
	p4 := tcpPair(t, "tcp4", "127.0.0.1:0", TCP4)
	p6 := tcpPair(t, "tcp6", "[::1]:0", TCP6)
	tw := tcpPair(t, "tcp4", "127.0.0.1:0", TCP4)
	u4 := udpSocket(t, false)
	u6 := udpSocket(t, true)
	twLocal, twRemote := tw.clientAddr(), tw.listenAddr()
	tw.client.Close()
	tw.server.Close()
	tw.ln.Close()
	t.Logf("pid %d", os.Getpid())
	for _, p := range []*winPair{p4, p6} {
		t.Logf("%s listener %s client %s", p.kind, p.listenAddr(), p.clientAddr())
	}
	t.Logf("tcp4 time_wait %s -> %s", twLocal, twRemote)
	t.Logf("udp4 %s udp6 %s", u4, u6)

	c, err := New("auto")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mc := c.(*mibCollector)
	// Wait for the TIME_WAIT remnant to show.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := find(collectAll(t, c), TCP4, twLocal, twRemote)
		if s != nil && s.State == StateTimeWait {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TIME_WAIT: %+v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, tb := range mibTables {
		b, err := mc.table(tb.proc, tb.af, tb.class)
		if err != nil {
			t.Fatal(err)
		}
		rowLen, _ := mibRowLen(tb.family, tb.typ)
		n := int(binary.LittleEndian.Uint32(b))
		raw := b[:mibTableHdrLen+n*rowLen]
		name := tb.kind.String()
		writeTestdataFile(t, "mib_"+name+".bin", raw)
		writeTestdataFile(t, filepath.Join("fuzz", "FuzzParseMibTable", "capture_"+name),
			fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\nbool(%v)\nbool(%v)\n", raw, tb.family == AF_INET6, tb.typ == SOCK_DGRAM))
		socks, err := ParseMibTable(raw, tb.family, tb.typ, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range socks {
			t.Logf("%s %s -> %s %s pid %d orphan %v", name, s.Local, s.Remote, s.State, s.Pid, s.Orphan)
		}
	}
}

func writeTestdataFile(t *testing.T, name string, b []byte) {
	path := filepath.Join("testdata", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
