package collector

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
)

var errNoHeader = errors.New("procnet: missing header line")

// ParseProcNet appends to dst the sockets of b, the content of /proc/net/tcp,
// tcp6, udp or udp6; family and typ say which. Rows that cannot be parsed are
// skipped and counted in skipped. The only content error is a missing header,
// which means b is not such a file.
//
// It works on bytes without allocating per row: it runs at every tick over
// tables of thousands of rows.
func ParseProcNet(b []byte, family, typ uint8, dst []Socket) (socks []Socket, skipped int, err error) {
	var addrLen int
	switch family {
	case AF_INET:
		addrLen = 8
	case AF_INET6:
		addrLen = 32
	default:
		return dst, 0, fmt.Errorf("procnet: unsupported address family %d", family)
	}

	header, b, _ := bytes.Cut(b, []byte{'\n'})
	if f, _ := nextField(header); string(f) != "sl" {
		return dst, 0, errNoHeader
	}
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		s, ok := parseProcNetRow(line, addrLen)
		if !ok {
			skipped++
			continue
		}
		s.Family = family
		s.Type = typ
		s.Orphan = orphaned(typ, s.State, s.Inode)
		dst = append(dst, s)
	}
	return dst, skipped, nil
}

// parseProcNetRow parses "sl local rem st tx:rx tr:when retrnsmt uid timeout
// inode ..." as written by tcp4_seq_show and friends.
func parseProcNetRow(line []byte, addrLen int) (s Socket, ok bool) {
	var f [10][]byte
	for i := range f {
		f[i], line = nextField(line)
		if len(f[i]) == 0 {
			return s, false
		}
	}
	if f[0][len(f[0])-1] != ':' {
		return s, false
	}
	if s.Local, ok = parseHexAddrPort(f[1], addrLen); !ok {
		return s, false
	}
	if s.Remote, ok = parseHexAddrPort(f[2], addrLen); !ok {
		return s, false
	}
	st, ok := parseHex(f[3])
	if !ok || st > math.MaxUint8 {
		return s, false
	}
	uid, ok := parseDec(f[7])
	if !ok || uid > math.MaxUint32 {
		return s, false
	}
	inode, ok := parseDec(f[9])
	if !ok {
		return s, false
	}
	s.State = State(st)
	s.UID = uint32(uid)
	s.Inode = inode
	s.Pid = -1
	return s, true
}

// parseHexAddrPort parses "0100007F:0050". The kernel prints the address as
// 32-bit words in host byte order and the port as a number.
func parseHexAddrPort(b []byte, addrLen int) (netip.AddrPort, bool) {
	if len(b) != addrLen+5 || b[addrLen] != ':' {
		return netip.AddrPort{}, false
	}
	port, ok := parseHex(b[addrLen+1:])
	if !ok {
		return netip.AddrPort{}, false
	}
	var a [16]byte
	for i := 0; i < addrLen; i += 8 {
		w, ok := parseHex(b[i : i+8])
		if !ok {
			return netip.AddrPort{}, false
		}
		binary.NativeEndian.PutUint32(a[i/2:], uint32(w))
	}
	var addr netip.Addr
	if addrLen == 8 {
		addr = netip.AddrFrom4([4]byte(a[:4]))
	} else {
		addr = netip.AddrFrom16(a)
	}
	return netip.AddrPortFrom(addr, uint16(port)), true
}

// nextField returns the first space-separated field of b and what follows it.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	j := i
	for j < len(b) && !isSpace(b[j]) {
		j++
	}
	return b[i:j], b[j:]
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

// parseHex parses up to 16 hex digits.
func parseHex(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}

// parseDec parses an unsigned decimal number that fits in 64 bits.
func parseDec(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}
