package main

import (
	"net"
	"testing"
)

func TestAllLoopbackBut(t *testing.T) {
	nets, err := allLoopbackBut("127.77.77.77")
	if err != nil {
		t.Fatal(err)
	}
	var parsed []*net.IPNet
	for _, n := range nets {
		_, p, err := net.ParseCIDR(n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		parsed = append(parsed, p)
	}
	in := func(ip string) bool {
		for _, p := range parsed {
			if p.Contains(net.ParseIP(ip)) {
				return true
			}
		}
		return false
	}
	for _, ip := range []string{"127.0.0.1", "127.77.77.76", "127.77.77.78", "127.255.255.255", "127.0.0.0", "::1"} {
		if !in(ip) {
			t.Errorf("%s not excluded", ip)
		}
	}
	if in("127.77.77.77") {
		t.Error("127.77.77.77 excluded")
	}
	if in("128.0.0.1") || in("126.255.255.255") {
		t.Error("a network outside 127.0.0.0/8 excluded")
	}
	if _, err := allLoopbackBut("10.0.0.1"); err == nil {
		t.Error("10.0.0.1 accepted")
	}
}
