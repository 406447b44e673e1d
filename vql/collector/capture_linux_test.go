//go:build linux

package collector

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var capture = flag.Bool("capture", false, "rewrite testdata/ from the live socket table (run in a fresh network namespace)")

// TestCapture records the socket tables of a known set of loopback sockets
// for the tests that parse captured records. Run it alone in a network
// namespace of its own, so that no socket of the machine ends up in
// testdata/, then update the expectations of TestCaptured from its log:
//
//	unshare -n sh -c 'ip link set lo up && go test -run TestCapture -capture -v'
func TestCapture(t *testing.T) {
	if !*capture {
		t.Skip("run with -capture to rewrite testdata/")
	}
	nl := newCollector(t, "netlink")
	c := nl.(*netlinkCollector)
	logConn := func(name string, c conn) {
		t.Logf("%-14s %s %s -> %s inode %d", name, c.kind, c.local, c.remote, c.inode)
	}

	for _, tc := range []struct {
		network, addr string
		kind          Kind
	}{{"tcp4", "127.0.0.1:0", TCP4}, {"tcp6", "[::1]:0", TCP6}} {
		ln := listen(t, tc.network, tc.addr)
		logConn("listener", listenerConn(t, ln, tc.kind))
		client, server := dial(t, ln, tc.kind, true)
		logConn("client", *client)
		logConn("server", *server)

		client, server = dial(t, ln, tc.kind, true)
		client.c.Close()
		waitState(t, nl, tc.kind, client.local, client.remote, StateFinWait2)
		server.c.Close()
		waitState(t, nl, tc.kind, client.local, client.remote, StateTimeWait)
		logConn("time_wait", *client)

		client, server = dial(t, ln, tc.kind, true)
		client.c.Close()
		waitState(t, nl, tc.kind, client.local, client.remote, StateFinWait2)
		logConn("fin_wait2", *client)
		logConn("close_wait", *server)

		client, _ = dial(t, ln, tc.kind, false)
		logConn("unaccepted", *client)
	}

	ds := listen(t, "tcp", "[::]:0")
	logConn("dual listener", listenerConn(t, ds, TCP6))
	port := ds.Addr().(*net.TCPAddr).Port
	client, server := dialTo(t, ds, "tcp4", fmt.Sprintf("127.0.0.1:%d", port), TCP4, true)
	server.kind = TCP6
	logConn("dual client", *client)
	logConn("dual server", *server) // an IPv4 peer on an IPv6 socket

	for _, tc := range []struct {
		network, addr string
		kind          Kind
	}{{"udp4", "127.0.0.1:0", UDP4}, {"udp6", "[::1]:0", UDP6}} {
		server, client := udpPair(t, tc.network, tc.addr, tc.kind)
		logConn("udp server", server)
		logConn("udp client", client)
	}

	for _, tb := range tables {
		name := strings.TrimPrefix(tb.path, "/proc/net/")
		if tb.kind&(TCP4|UDP4) != 0 {
			name += "4"
		}
		raw := captureDump(t, c, tb.family, tb.protocol, tb.typ)
		writeTestdata(t, "netlink_"+name+".bin", raw)
		writeTestdata(t, filepath.Join("fuzz", "FuzzParseInetDiag", "capture_"+name),
			fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\nbyte(%q)\n", raw, tb.typ))

		proc, err := os.ReadFile(tb.path)
		if err != nil {
			t.Fatal(err)
		}
		writeTestdata(t, "proc_net_"+name, proc)
		writeTestdata(t, filepath.Join("fuzz", "FuzzParseProcNet", "capture_"+name),
			fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\nbool(%v)\nbyte(%q)\n", proc, tb.family == AF_INET6, tb.typ))
	}
}

// captureDump returns the replies to one dump request as read, datagram
// after datagram.
func captureDump(t *testing.T, c *netlinkCollector, family, protocol, typ uint8) []byte {
	if err := c.request(family, protocol); err != nil {
		t.Fatal(err)
	}
	var raw []byte
	for done := false; !done; {
		b, err := c.recv()
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, b...)
		if _, done, err = parseInetDiag(b, typ, c.seq, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	return raw
}

func writeTestdata(t *testing.T, name string, b []byte) {
	path := filepath.Join("testdata", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
