//go:build linux

package collector

import (
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// conn is one end of a loopback connection as the test sees it.
type conn struct {
	c      net.Conn
	kind   Kind
	local  netip.AddrPort
	remote netip.AddrPort
	inode  uint64
}

func newConn(t testing.TB, c net.Conn, kind Kind) conn {
	t.Helper()
	return conn{c: c, kind: kind, local: addrPort(c.LocalAddr()), remote: addrPort(c.RemoteAddr()), inode: inodeOf(t, c.(syscall.Conn))}
}

func inodeOf(t testing.TB, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

func listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dial connects to ln; accept says whether to take the connection out of
// the accept queue. server is nil when it stays there.
func dial(t testing.TB, ln net.Listener, kind Kind, accept bool) (client, server *conn) {
	t.Helper()
	return dialTo(t, ln, ln.Addr().Network(), ln.Addr().String(), kind, accept)
}

func dialTo(t testing.TB, ln net.Listener, network, addr string, kind Kind, accept bool) (client, server *conn) {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := newConn(t, c, kind)
	if !accept {
		return &cl, nil
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	sv := newConn(t, s, kind)
	return &cl, &sv
}

// udpPair returns an unconnected UDP socket and one connected to it.
func udpPair(t testing.TB, network, addr string, kind Kind) (server, client conn) {
	t.Helper()
	s, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial(network, s.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ss := conn{kind: kind, local: addrPort(s.LocalAddr()), remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), inode: inodeOf(t, s.(syscall.Conn))}
	if kind == UDP6 {
		ss.remote = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	return ss, newConn(t, c, kind)
}

// waitState polls c until the socket reaches state, for at most 3 s.
func waitState(t testing.TB, c Collector, kind Kind, local, remote netip.AddrPort, state State) Socket {
	t.Helper()
	var socks []Socket
	deadline := time.Now().Add(3 * time.Second)
	for {
		var err error
		if socks, err = c.Collect(kind, socks[:0]); err != nil {
			t.Fatal(err)
		}
		if s := find(socks, kind, local, remote); s != nil && s.State == state {
			return *s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s -> %s: never reached %s", kind, local, remote, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newCollector(t testing.TB, backend string) Collector {
	t.Helper()
	c, err := New(backend)
	if err != nil {
		t.Fatalf("New(%q): %v", backend, err)
	}
	t.Cleanup(func() { c.Close() })
	if c.Name() != backend {
		t.Fatalf("New(%q).Name() = %q", backend, c.Name())
	}
	return c
}

func TestNew(t *testing.T) {
	c, err := New("auto")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Name() != "netlink" && c.Name() != "procfs" {
		t.Errorf("auto picked %q", c.Name())
	}
	if _, err := New("ebpf"); err == nil {
		t.Error("New(ebpf) did not fail")
	}
}

// listenerConn describes a TCP listener as the kernel shows it.
func listenerConn(t testing.TB, ln net.Listener, kind Kind) conn {
	t.Helper()
	unspec := netip.IPv4Unspecified()
	if kind == TCP6 {
		unspec = netip.IPv6Unspecified()
	}
	return conn{kind: kind, local: addrPort(ln.Addr()), remote: netip.AddrPortFrom(unspec, 0), inode: inodeOf(t, ln.(syscall.Conn))}
}

// TestLiveBackends checks that both backends see the same sockets, with the
// addresses, states and inodes the test knows them by.
func TestLiveBackends(t *testing.T) {
	type want struct {
		conn
		state State
	}
	var wants []want
	for _, tc := range []struct {
		network, addr string
		kind          Kind
	}{{"tcp4", "127.0.0.1:0", TCP4}, {"tcp6", "[::1]:0", TCP6}} {
		ln := listen(t, tc.network, tc.addr)
		client, server := dial(t, ln, tc.kind, true)
		wants = append(wants,
			want{listenerConn(t, ln, tc.kind), StateListen},
			want{*client, StateEstablished},
			want{*server, StateEstablished})
	}
	for _, tc := range []struct {
		network, addr string
		kind          Kind
	}{{"udp4", "127.0.0.1:0", UDP4}, {"udp6", "[::1]:0", UDP6}} {
		server, client := udpPair(t, tc.network, tc.addr, tc.kind)
		wants = append(wants, want{server, StateClose}, want{client, StateEstablished})
	}

	// Comparing each backend with fstat also shows they agree.
	for _, backend := range []string{"netlink", "procfs"} {
		c := newCollector(t, backend)
		socks, err := c.Collect(AllKinds, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range wants {
			s := find(socks, w.kind, w.local, w.remote)
			if s == nil {
				t.Errorf("%s: %s %s -> %s missing", backend, w.kind, w.local, w.remote)
				continue
			}
			if s.State != w.state || s.Inode != w.inode || s.Orphan || s.Pid != -1 {
				t.Errorf("%s: %s %s -> %s: state %s inode %d orphan %v pid %d, want %s inode %d",
					backend, w.kind, w.local, w.remote, s.State, s.Inode, s.Orphan, s.Pid, w.state, w.inode)
			}
			if backend == "netlink" && s.Cookie == 0 {
				t.Errorf("netlink: %s %s -> %s: no cookie", w.kind, w.local, w.remote)
			}
		}
	}
}

// TestNetlinkLostReply checks that a reply too large for the receive buffer
// makes the dump start over with a larger one.
func TestNetlinkLostReply(t *testing.T) {
	ln := listen(t, "tcp4", "127.0.0.1:0")
	client, _ := dial(t, ln, TCP4, true)
	c, err := newNetlink()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.buf = make([]byte, 64)
	socks, err := c.Collect(TCP4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.buf) <= 64 {
		t.Errorf("buffer not grown: %d bytes", len(c.buf))
	}
	if find(socks, TCP4, client.local, client.remote) == nil {
		t.Errorf("client %s missing from %d sockets", client.local, len(socks))
	}
	if socks, err = c.Collect(TCP4, socks[:0]); err != nil || find(socks, TCP4, client.local, client.remote) == nil {
		t.Errorf("second dump: %d sockets, %v", len(socks), err)
	}
}

// TestNetlinkRecovers checks that a dump left unread, as an error midway
// leaves it, does not break the next ones: the kernel refuses a new dump on
// the socket (EBUSY) while one is unfinished.
func TestNetlinkRecovers(t *testing.T) {
	ln := listen(t, "tcp4", "127.0.0.1:0")
	for range 300 { // more than one datagram of replies
		dial(t, ln, TCP4, true)
	}
	c, err := newNetlink()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.request(AF_INET, unix.IPPROTO_TCP); err != nil {
		t.Fatal(err)
	}
	socks, err := c.Collect(TCP4, nil)
	t.Logf("with a dump unread: %d sockets, %v", len(socks), err)
	if socks, err = c.Collect(TCP4, socks[:0]); err != nil || len(socks) < 601 {
		t.Errorf("next dump: %d sockets, %v", len(socks), err)
	}
}

// TestTimeWaitCookie checks that the kernel keeps a socket's cookie when it
// moves to TIME_WAIT, which is what lets a poller follow a connection past
// close().
func TestTimeWaitCookie(t *testing.T) {
	nl := newCollector(t, "netlink")
	for _, tc := range []struct {
		network, addr string
		kind          Kind
	}{{"tcp4", "127.0.0.1:0", TCP4}, {"tcp6", "[::1]:0", TCP6}} {
		ln := listen(t, tc.network, tc.addr)
		client, server := dial(t, ln, tc.kind, true)
		estab := waitState(t, nl, tc.kind, client.local, client.remote, StateEstablished)
		if estab.Cookie == 0 || estab.Orphan {
			t.Fatalf("%s client: %+v", tc.kind, estab)
		}
		// The client closes first, so its side is the one left in TIME_WAIT.
		client.c.Close()
		fw := waitState(t, nl, tc.kind, client.local, client.remote, StateFinWait2)
		server.c.Close()
		tw := waitState(t, nl, tc.kind, client.local, client.remote, StateTimeWait)
		if fw.Cookie != estab.Cookie || tw.Cookie != estab.Cookie {
			t.Errorf("%s: cookie %#x in ESTAB, %#x in FIN_WAIT2, %#x in TIME_WAIT", tc.kind, estab.Cookie, fw.Cookie, tw.Cookie)
		}
		if !tw.Orphan || tw.Inode != 0 {
			t.Errorf("%s: TIME_WAIT socket not orphaned: %+v", tc.kind, tw)
		}
	}
}

// BenchmarkCollect polls a table of about 1,000 loopback sockets, as a tick
// of netstat_watch would.
func BenchmarkCollect(b *testing.B) {
	ln := listen(b, "tcp4", "127.0.0.1:0")
	for range 500 {
		dial(b, ln, TCP4, true)
	}
	for _, backend := range []string{"netlink", "procfs"} {
		b.Run(backend, func(b *testing.B) {
			c := newCollector(b, backend)
			var socks []Socket
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if socks, err = c.Collect(AllKinds, socks[:0]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(socks)), "sockets")
		})
	}
}

// When netlink is refused, auto falls back to /proc/net, says why, and
// still sees the sockets.
func TestAutoFallsBackToProcfs(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := auto(func() (Collector, error) { return nil, syscall.EPROTONOSUPPORT })
	defer c.Close()
	if !strings.HasPrefix(c.Name(), "procfs (netlink unavailable: ") {
		t.Errorf("Name() = %q, want the procfs fallback with its reason", c.Name())
	}
	socks, err := c.Collect(TCP4, nil)
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	for _, s := range socks {
		if s.Local.Port() == port && s.State == StateListen {
			return
		}
	}
	t.Errorf("listener on port %d not in the procfs snapshot", port)
}

// Both TCP families come from one legacy dump (one walk of the kernel's
// connection hash), and nothing is lost or doubled by it.
func TestNetlinkCombinedTCPDump(t *testing.T) {
	var ports []uint16
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("%s: %v", addr, err)
		}
		defer ln.Close()
		ports = append(ports, uint16(ln.Addr().(*net.TCPAddr).Port))
	}
	c, err := newNetlink()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	both, err := c.Collect(TCP4|TCP6, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.noCompat {
		t.Fatal("kernel refused the combined TCP dump")
	}
	v4, _ := c.Collect(TCP4, nil)
	v6, _ := c.Collect(TCP6, nil)
	count := func(socks []Socket) map[uint16]int {
		m := map[uint16]int{}
		for _, s := range socks {
			if s.State == StateListen {
				m[s.Local.Port()]++
			}
		}
		return m
	}
	got, want4, want6 := count(both), count(v4), count(v6)
	if got[ports[0]] != 1 || got[ports[1]] != 1 || want4[ports[0]] != 1 || want6[ports[1]] != 1 {
		t.Errorf("listeners: combined %v, tcp4 %v, tcp6 %v (ports %v)", got, want4, want6, ports)
	}
}
