// Package ipset holds an ordered list of IP networks (an IOC list, an
// allow-list) compiled once, so that finding the first network holding an
// address costs one map lookup per distinct prefix length in the list, not
// one CIDR parse per entry as cidr_contains() over a list of strings does.
//
// IPv4-mapped IPv6 addresses (::ffff:203.0.113.5) are the IPv4 address
// they map: a client may report either form for the same peer.
//
// set.go holds the matcher and knows nothing of VQL; function.go is the
// VQL function netwatch_network().
package ipset

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Set is an immutable list of networks. The zero Set holds nothing.
type Set struct {
	// first index in the list of each network, by prefix.
	byPrefix map[netip.Prefix]int
	// the distinct prefix lengths present, per family, longest first.
	bits4, bits6 []int
}

// Parse reads one network: a CIDR (203.0.113.0/24, 2001:db8::/32) or a
// bare address (a /32 or /128). Host bits are cleared.
func Parse(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("empty network")
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR network", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR network", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return unmapPrefix(p).Masked(), nil
}

// unmapPrefix turns ::ffff:a.b.c.d/N (N >= 96) into a.b.c.d/(N-96).
func unmapPrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// New compiles the networks, in order. Entries that do not parse are
// skipped (ok[i] reports each); an entry repeated keeps its first index.
func New(networks []string) (s *Set, ok []bool) {
	s = &Set{byPrefix: make(map[netip.Prefix]int, len(networks))}
	ok = make([]bool, len(networks))
	seen4, seen6 := map[int]bool{}, map[int]bool{}
	for i, n := range networks {
		p, err := Parse(n)
		if err != nil {
			continue
		}
		ok[i] = true
		if _, dup := s.byPrefix[p]; dup {
			continue
		}
		s.byPrefix[p] = i
		if p.Addr().Is4() {
			if !seen4[p.Bits()] {
				seen4[p.Bits()] = true
				s.bits4 = append(s.bits4, p.Bits())
			}
		} else if !seen6[p.Bits()] {
			seen6[p.Bits()] = true
			s.bits6 = append(s.bits6, p.Bits())
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(s.bits4)))
	sort.Sort(sort.Reverse(sort.IntSlice(s.bits6)))
	return s, ok
}

// Lookup returns the index of the first network (in list order) holding
// the address, or -1. Surrounding white space is ignored (VQL strings and
// pasted lists carry it); an address that does not parse then matches
// nothing.
func (s *Set) Lookup(ip string) int {
	if s == nil || len(s.byPrefix) == 0 {
		return -1
	}
	a, err := netip.ParseAddr(strings.TrimSpace(ip))
	if err != nil {
		return -1
	}
	return s.LookupAddr(a)
}

// LookupAddr is Lookup for a parsed address (a zone is ignored): no
// allocation, for callers that test every connection.
func (s *Set) LookupAddr(a netip.Addr) int {
	if s == nil || len(s.byPrefix) == 0 || !a.IsValid() {
		return -1
	}
	a = a.WithZone("").Unmap()
	bits := s.bits6
	if a.Is4() {
		bits = s.bits4
	}
	best := -1
	for _, b := range bits {
		p, err := a.Prefix(b)
		if err != nil {
			continue
		}
		if i, ok := s.byPrefix[p]; ok && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}
