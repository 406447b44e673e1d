package netstat_watch

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/Velocidex/ordereddict"
	"www.velocidex.com/golang/vfilter"
)

// TestExclusions: the exclude_* predicate on the addresses and owner of
// one connection, as the artifact's KeepAddresses() and own-Pid test
// decide on its row.
func TestExclusions(t *testing.T) {
	a := netip.MustParseAddr
	var none netip.Addr
	all, err := parseExclusions(&NetstatWatchArgs{ExcludeLoopback: true,
		ExcludePids:     []vfilter.Any{int64(4242), "77"},
		ExcludeNetworks: []string{"192.0.2.0/24", " 2001:db8::/32 ", "198.51.100.7", "::ffff:203.0.113.0/120"}})
	if err != nil {
		t.Fatal(err)
	}
	loop := exclusions{loopback: true}
	for _, tc := range []struct {
		name          string
		e             exclusions
		local, remote netip.Addr
		pid           int32
		want          bool
	}{
		{"nothing set", exclusions{}, a("127.0.0.1"), a("127.0.0.1"), 4242, false},
		{"remote 127.0.0.1", loop, a("10.0.0.1"), a("127.0.0.1"), 1, true},
		{"remote 127.255.0.9", loop, a("10.0.0.1"), a("127.255.0.9"), 1, true},
		{"remote ::1", loop, a("::1"), a("::1"), 1, true},
		{"remote ::ffff:127.0.0.1", loop, a("::ffff:127.0.0.1"), a("::ffff:127.0.0.1"), 1, true},
		{"remote 128.0.0.1", loop, a("127.0.0.1"), a("128.0.0.1"), 1, false},
		// The remote decides when there is one: a connection from a
		// loopback address to elsewhere is kept.
		{"local loopback, remote not", loop, a("127.0.0.1"), a("10.0.0.2"), 1, false},
		{"remote ::2", loop, a("::1"), a("::2"), 1, false},
		{"remote ::ffff:10.0.0.1", loop, a("::ffff:127.0.0.1"), a("::ffff:10.0.0.1"), 1, false},
		// No remote: the local address decides.
		{"listener 127.0.0.1", loop, a("127.0.0.1"), a("0.0.0.0"), 1, true},
		{"listener ::1", loop, a("::1"), a("::"), 1, true},
		{"listener ::ffff:127.0.0.1", loop, a("::ffff:127.0.0.1"), a("::"), 1, true},
		{"listener 0.0.0.0", loop, a("0.0.0.0"), a("0.0.0.0"), 1, false},
		{"listener ::", loop, a("::"), a("::"), 1, false},
		{"listener 10.0.0.1", loop, a("10.0.0.1"), a("0.0.0.0"), 1, false},
		{"no remote at all, local loopback", loop, a("127.0.0.1"), none, 1, true},
		{"no addresses", loop, none, none, 1, false},
		// ::ffff:0.0.0.0 is not "no remote" for the artifact either.
		{"remote ::ffff:0.0.0.0", loop, a("::1"), a("::ffff:0.0.0.0"), 1, false},

		{"pid listed", all, a("10.0.0.1"), a("10.9.9.9"), 4242, true},
		{"pid listed as a string", all, a("10.0.0.1"), a("10.9.9.9"), 77, true},
		{"pid not listed", all, a("10.0.0.1"), a("10.9.9.9"), 4243, false},
		{"owner unknown", all, a("10.0.0.1"), a("10.9.9.9"), -1, false},

		{"in a v4 network", all, a("10.0.0.1"), a("192.0.2.77"), 1, true},
		{"v4 network, mapped remote", all, a("::ffff:10.0.0.1"), a("::ffff:192.0.2.77"), 1, true},
		{"bare address", all, a("10.0.0.1"), a("198.51.100.7"), 1, true},
		{"next to a bare address", all, a("10.0.0.1"), a("198.51.100.8"), 1, false},
		{"mapped network, v4 remote", all, a("10.0.0.1"), a("203.0.113.9"), 1, true},
		{"v6 network", all, a("2001:db8:1::1"), a("2001:db8:ffff::1"), 1, true},
		{"v6 outside", all, a("2001:db9::1"), a("2001:db9::2"), 1, false},
		{"local in a network, remote not", all, a("192.0.2.1"), a("10.9.9.9"), 1, false},
		{"listener, no remote", all, a("192.0.2.1"), a("0.0.0.0"), 1, false},
	} {
		if got := tc.e.excludes(tc.local, tc.remote, tc.pid); got != tc.want {
			t.Errorf("%s: excludes(%v, %v, %d) = %v, want %v", tc.name, tc.local, tc.remote, tc.pid, got, tc.want)
		}
	}
}

func TestExclusionsNone(t *testing.T) {
	e, err := parseExclusions(&NetstatWatchArgs{ExcludePids: []vfilter.Any{}, ExcludeNetworks: []string{}})
	if err != nil || e.any() {
		t.Errorf("empty lists: %+v, %v; want no exclusion", e, err)
	}
}

// TestExclusionsNoAlloc: the test runs once per event, on hosts with
// thousands of connections a second.
func TestExclusionsNoAlloc(t *testing.T) {
	e, err := parseExclusions(&NetstatWatchArgs{ExcludeLoopback: true, ExcludePids: []vfilter.Any{1},
		ExcludeNetworks: []string{"192.0.2.0/24", "2001:db8::/32"}})
	if err != nil {
		t.Fatal(err)
	}
	local, remote := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("::ffff:198.51.100.1")
	if n := testing.AllocsPerRun(100, func() { e.excludes(local, remote, 7) }); n != 0 {
		t.Errorf("%v allocations per connection, want 0", n)
	}
}

// TestArgsAsDict: arguments given as `**`=dict(...) keep their meaning,
// the defaults-true switches included: a listener opened while watching
// with listening=FALSE is not reported, the connection to it is.
func TestArgsAsDict(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rows, logs := watch(t, ctx, "SELECT * FROM netstat_watch(`**`=dict(period=0.1, kinds='tcp', "+
		"listening=FALSE, backend='netlink', exclude_networks=['192.0.2.0/24']))")
	if !strings.Contains(logs.String(), "every 100ms using netlink; excluding networks 192.0.2.0/24") {
		t.Fatalf("start line does not show the dict's arguments: %s", logs)
	}
	time.Sleep(300 * time.Millisecond) // past the baseline
	ln := loopbackServer(t)
	time.Sleep(300 * time.Millisecond) // a snapshot or more with the listener
	cmd, cport := startChild(t, "tcp", ln.Addr().String(), 300*time.Millisecond)
	defer cmd.Wait()
	srv, cli := ln.Addr().String(), hostPort("127.0.0.1", cport)
	got := collectFor(ctx, rows, func(r *ordereddict.Dict) bool {
		return endpoint(r, "Laddr") == srv || endpoint(r, "Laddr") == cli
	}, hasRemoved, 500*time.Millisecond)
	if d := diffsOf(got, cli, srv); d != "added,removed" {
		t.Errorf("connection: rows %s, want added,removed\n%v\nlogs: %s", d, got, logs)
	}
	for _, r := range got {
		if get(r, "Direction") == "listen" {
			t.Errorf("listener reported with listening=FALSE in the dict: %v", r)
		}
	}
}

// diffsOf lists the Diff of the rows of one side of a connection, by its
// local and remote "ip:port" (other tests' and other processes' loopback
// connections reuse the same port numbers on other addresses).
func diffsOf(rows []*ordereddict.Dict, local, remote string) string {
	var d []string
	for _, r := range rows {
		if endpoint(r, "Laddr") == local && endpoint(r, "Raddr") == remote {
			d = append(d, get(r, "Diff").(string))
		}
	}
	return strings.Join(d, ",")
}

// endpoint is a row's Laddr or Raddr as "ip:port".
func endpoint(r *ordereddict.Dict, which string) string {
	return net.JoinHostPort(fmt.Sprint(get(r, which+".IP")), fmt.Sprint(get(r, which+".Port")))
}

// hostPort is "ip:port".
func hostPort(ip string, port any) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }
