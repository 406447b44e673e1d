package ipset

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "203.0.113.0/24", want: "203.0.113.0/24"},
		{in: " 198.51.100.7 ", want: "198.51.100.7/32"},
		{in: "10.0.0.5/24", want: "10.0.0.0/24"},
		{in: "2001:db8:bad::/48", want: "2001:db8:bad::/48"},
		{in: "2001:db8:feed::42", want: "2001:db8:feed::42/128"},
		{in: "::ffff:203.0.113.0/120", want: "203.0.113.0/24"},
		{in: "::ffff:198.51.100.7", want: "198.51.100.7/32"},
		{in: "::ffff:0:0/80", want: "::/80"},
		{in: "::ffff:0:0/96", want: "0.0.0.0/0"},
		{in: "not-an-ip", bad: true},
		{in: "10.0.0.0/99", bad: true},
		{in: "300.1.2.3", bad: true},
		{in: "fe80::1%eth0", bad: true},
		{in: "", bad: true},
	} {
		p, err := Parse(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tc.in, p)
			}
			continue
		}
		if err != nil || p != netip.MustParsePrefix(tc.want) {
			t.Errorf("Parse(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

func TestLookupFirstInListOrder(t *testing.T) {
	s, ok := New([]string{
		"203.0.113.0/24",    // 0
		"not-an-ip",         // 1: skipped
		"198.51.100.7",      // 2
		"2001:db8:bad::/48", // 3
		"203.0.113.5",       // 4: inside 0, which comes first
		"192.0.2.128/25",    // 5
		"2001:db8:feed::42", // 6
		"10.0.0.0/8",        // 7
		"10.1.0.0/16",       // 8: inside 7
		"198.51.100.7/32",   // 9: repeats 2
	})
	if want := []bool{true, false, true, true, true, true, true, true, true, true}; len(ok) != len(want) {
		t.Fatalf("ok %v", ok)
	} else {
		for i := range want {
			if ok[i] != want[i] {
				t.Errorf("entry %d: ok %v, want %v", i, ok[i], want[i])
			}
		}
	}
	for _, tc := range []struct {
		ip   string
		want int
	}{
		{"203.0.113.5", 0},
		{"203.0.113.200", 0},
		{"198.51.100.7", 2},
		{"::ffff:198.51.100.7", 2},
		{"::FFFF:203.0.113.9", 0},
		{"198.51.100.8", -1},
		{"192.0.2.200", 5},
		{"192.0.2.127", -1},
		{"2001:db8:bad::1", 3},
		{"2001:db8:feed::42", 6},
		{"2001:db8:feed::43", -1},
		{"10.1.2.3", 7},
		{"fe80::1%eth0", -1},
		{"", -1},
		{"garbage", -1},
	} {
		if got := s.Lookup(tc.ip); got != tc.want {
			t.Errorf("Lookup(%q) = %d, want %d", tc.ip, got, tc.want)
		}
		// The parsed form answers the same (an address that does not
		// parse is the invalid Addr, which matches nothing).
		a, _ := netip.ParseAddr(tc.ip)
		if got := s.LookupAddr(a); got != tc.want {
			t.Errorf("LookupAddr(%q) = %d, want %d", tc.ip, got, tc.want)
		}
	}
}

func TestLookupEmpty(t *testing.T) {
	var nilSet *Set
	empty, _ := New(nil)
	for _, s := range []*Set{nilSet, empty} {
		if got := s.Lookup("203.0.113.5"); got != -1 {
			t.Errorf("empty set: Lookup = %d", got)
		}
	}
}

// The longer prefix found first must not hide an earlier, shorter one.
func TestLookupPrefersListOrderOverSpecificity(t *testing.T) {
	s, _ := New([]string{"10.0.0.0/8", "10.1.2.3"})
	if got := s.Lookup("10.1.2.3"); got != 0 {
		t.Errorf("Lookup = %d, want 0", got)
	}
	s, _ = New([]string{"10.1.2.3", "10.0.0.0/8"})
	if got := s.Lookup("10.1.2.3"); got != 0 {
		t.Errorf("Lookup = %d, want 0", got)
	}
}

func FuzzLookup(f *testing.F) {
	f.Add("203.0.113.0/24", "203.0.113.5")
	f.Add("::ffff:1.2.3.0/120", "1.2.3.4")
	f.Add("2001:db8::/32", "2001:db8::1")
	f.Fuzz(func(t *testing.T, network, ip string) {
		s, ok := New([]string{network})
		got := s.Lookup(ip)
		if !ok[0] {
			if got != -1 {
				t.Fatalf("unparsable %q matched %q", network, ip)
			}
			return
		}
		p, _ := Parse(network)
		a, err := netip.ParseAddr(strings.TrimSpace(ip))
		want := -1
		if err == nil && p.Contains(a.WithZone("").Unmap()) {
			want = 0
		}
		if got != want {
			t.Fatalf("Lookup(%q) in %q = %d, want %d", ip, network, got, want)
		}
	})
}
