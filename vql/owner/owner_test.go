package owner

import (
	"bytes"
	"strconv"
	"testing"
)

func TestParseSocketLink(t *testing.T) {
	tests := []struct {
		in    string
		inode uint64
		ok    bool
	}{
		{"socket:[12345]", 12345, true},
		{"socket:[1]", 1, true},
		{"socket:[00042]", 42, true},
		{"socket:[18446744073709551615]", 1<<64 - 1, true},
		{"socket:[18446744073709551616]", 0, false}, // overflows
		{"socket:[99999999999999999999]", 0, false},
		{"socket:[0]", 0, false},
		{"socket:[]", 0, false},
		{"socket:[", 0, false},
		{"socket:]", 0, false},
		{"socket:[12", 0, false},
		{"socket:[12]x", 0, false},
		{"socket:[-1]", 0, false},
		{"socket:[+1]", 0, false},
		{"socket:[1 2]", 0, false},
		{"Socket:[12]", 0, false},
		{"pipe:[4026531840]", 0, false},
		{"anon_inode:[eventfd]", 0, false},
		{"/dev/null", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		inode, ok := parseSocketLink([]byte(tt.in))
		if inode != tt.inode || ok != tt.ok {
			t.Errorf("parseSocketLink(%q) = %d, %v; want %d, %v", tt.in, inode, ok, tt.inode, tt.ok)
		}
	}
}

func FuzzParseSocketLink(f *testing.F) {
	f.Add([]byte("socket:[12345]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		inode, ok := parseSocketLink(b)
		if !ok {
			if inode != 0 {
				t.Fatalf("parseSocketLink(%q) = %d with !ok", b, inode)
			}
			return
		}
		if inode == 0 || !bytes.HasPrefix(b, []byte(linkPrefix)) || !bytes.HasSuffix(b, []byte(linkSuffix)) {
			t.Fatalf("parseSocketLink(%q) accepted %d", b, inode)
		}
		digits := b[len(linkPrefix) : len(b)-len(linkSuffix)]
		if n, err := strconv.ParseUint(string(digits), 10, 64); err != nil || n != inode {
			t.Fatalf("parseSocketLink(%q) = %d; strconv says %d, %v", b, inode, n, err)
		}
	})
}
