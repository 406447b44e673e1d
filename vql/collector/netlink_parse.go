package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// Netlink and sock_diag constants (linux/netlink.h, linux/sock_diag.h,
// linux/inet_diag.h), kept here rather than taken from x/sys/unix so that the
// parser builds and is tested on every OS.
const (
	nlmsgAlignTo = 4
	nlmsgHdrLen  = 16 // struct nlmsghdr

	nlmsgNoop    = 0x1
	nlmsgError   = 0x2
	nlmsgDone    = 0x3
	nlmsgOverrun = 0x4

	sockDiagByFamily = 20
	// The legacy request type that dumps TCP over IPv4 and IPv6 in one
	// walk of the kernel's connection hash (replies carry the same type).
	tcpDiagGetSock = 18

	inetDiagMsgLen = 72 // struct inet_diag_msg
)

var errTruncated = errors.New("inet_diag: truncated netlink message")

func nlmsgAlign(n int) int { return (n + nlmsgAlignTo - 1) &^ (nlmsgAlignTo - 1) }

// ParseInetDiag appends to dst the sockets in b, a buffer of netlink messages
// as read from a NETLINK_SOCK_DIAG socket answering a SOCK_DIAG_BY_FAMILY dump.
// The replies do not say which protocol was dumped, so typ (SOCK_STREAM or
// SOCK_DGRAM) is set on every socket. done reports that NLMSG_DONE ended the
// dump. An NLMSG_ERROR reply yields an error wrapping its syscall.Errno. On
// error, the sockets parsed before it are still appended.
func ParseInetDiag(b []byte, typ uint8, dst []Socket) ([]Socket, bool, error) {
	return parseInetDiag(b, typ, 0, false, dst)
}

// parseInetDiag is ParseInetDiag that, when checkSeq is set, skips messages
// whose sequence number is not seq: the leftovers of an abandoned dump.
func parseInetDiag(b []byte, typ uint8, seq uint32, checkSeq bool, dst []Socket) ([]Socket, bool, error) {
	ne := binary.NativeEndian
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return dst, false, errTruncated
		}
		n := int(ne.Uint32(b[0:4]))
		if n < nlmsgHdrLen || n > len(b) {
			return dst, false, fmt.Errorf("inet_diag: bad netlink message length %d (%d bytes left)", n, len(b))
		}
		kind := ne.Uint16(b[4:6])
		msgSeq := ne.Uint32(b[8:12])
		payload := b[nlmsgHdrLen:n]
		// The last message of a buffer may lack its padding.
		b = b[min(nlmsgAlign(n), len(b)):]

		if checkSeq && msgSeq != seq {
			continue
		}
		switch kind {
		case sockDiagByFamily, tcpDiagGetSock:
			s, err := parseInetDiagMsg(payload, typ)
			if err != nil {
				return dst, false, err
			}
			dst = append(dst, s)
		case nlmsgDone:
			// A dump that fails midway reports its errno here.
			if len(payload) >= 4 {
				if e := int32(ne.Uint32(payload)); e < 0 {
					return dst, true, fmt.Errorf("inet_diag: dump failed: %w", syscall.Errno(-e))
				}
			}
			return dst, true, nil
		case nlmsgError:
			if len(payload) < 4 {
				return dst, false, errTruncated
			}
			e := int32(ne.Uint32(payload))
			if e == 0 { // an acknowledgement
				continue
			}
			return dst, false, fmt.Errorf("inet_diag: %w", syscall.Errno(-e))
		case nlmsgNoop:
		case nlmsgOverrun:
			return dst, false, errors.New("inet_diag: netlink overrun, data lost")
		default:
			return dst, false, fmt.Errorf("inet_diag: unexpected netlink message type %d", kind)
		}
	}
	return dst, false, nil
}

// parseInetDiagMsg decodes a struct inet_diag_msg; the attributes that may
// follow it are not needed.
func parseInetDiagMsg(p []byte, typ uint8) (Socket, error) {
	if len(p) < inetDiagMsgLen {
		return Socket{}, errTruncated
	}
	ne, be := binary.NativeEndian, binary.BigEndian
	s := Socket{
		Family: p[0],
		Type:   typ,
		State:  State(p[1]),
		Cookie: uint64(ne.Uint32(p[44:48])) | uint64(ne.Uint32(p[48:52]))<<32,
		UID:    ne.Uint32(p[64:68]),
		Inode:  uint64(ne.Uint32(p[68:72])),
		Pid:    -1,
	}
	var src, dst netip.Addr
	switch s.Family {
	case AF_INET:
		src = netip.AddrFrom4([4]byte(p[8:12]))
		dst = netip.AddrFrom4([4]byte(p[24:28]))
	case AF_INET6:
		src = netip.AddrFrom16([16]byte(p[8:24]))
		dst = netip.AddrFrom16([16]byte(p[24:40]))
	default:
		return Socket{}, fmt.Errorf("inet_diag: unexpected address family %d", s.Family)
	}
	s.Local = netip.AddrPortFrom(src, be.Uint16(p[4:6]))
	s.Remote = netip.AddrPortFrom(dst, be.Uint16(p[6:8]))
	s.Orphan = orphaned(typ, s.State, s.Inode)
	return s, nil
}

// orphaned reports whether no process holds a socket any more. The kernel
// reports inode 0 for a socket without a file, which is the case both after
// close() and before accept(): an ESTAB or CLOSE_WAIT socket waiting in a
// listener's accept queue, or a SYN_RECV request, has never had an owner, so
// only the states a socket can reach after close() count. UDP sockets die
// with their file.
func orphaned(typ uint8, st State, inode uint64) bool {
	if typ != SOCK_STREAM || inode != 0 {
		return false
	}
	switch st {
	case StateFinWait1, StateFinWait2, StateTimeWait, StateClose, StateLastAck, StateClosing:
		return true
	}
	return false
}
