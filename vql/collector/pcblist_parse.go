package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The format of the macOS sysctls net.inet.tcp.pcblist_n and
// net.inet.udp.pcblist_n, from XNU (apple-oss-distributions/xnu):
// get_pcblist_n in bsd/netinet/in_pcblist.c writes a struct xinpgen, then
// for each PCB a group of records, each starting with its length and kind
// and rounded up to 8 bytes (ROUNDUP64): xinpcb_n (XSO_INPCB), xsocket_n
// (XSO_SOCKET), two xsockbuf_n (XSO_RCVBUF, XSO_SNDBUF), xsockstat_n
// (XSO_STATS) and, for TCP, xtcpcb_n (XSO_TCPCB); then a closing xinpgen.
// Flows of the user-space stack (nstat_userland_list_snapshot in
// bsd/net/ntstat.c) follow the PCBs in the same format, with most fields
// zero.
//
// The structures are declared under #pragma pack(4) in
// bsd/netinet/in_pcb.h (xinpgen, xinpcb_n), bsd/sys/socketvar.h (xsocket_n)
// and bsd/netinet/tcp_var.h (xtcpcb_n); the offsets below were checked by
// compiling those declarations (offsetof). Records only grow at their end
// across releases, so each is read up to the last field used, checked
// against its own length, and skipped by that length.
//
// macOS runs little-endian only; ports and addresses are in network byte
// order.
const (
	xinpgenLen = 24 // struct xinpgen: xig_len, xig_count, xig_gen, xig_sogen

	xsoSocket = 0x001
	xsoInpcb  = 0x010
	xsoTcpcb  = 0x020

	// struct xinpcb_n
	xiFport  = 16 // inp_fport
	xiLport  = 18 // inp_lport
	xiGencnt = 28 // inp_gencnt: generation count of this PCB
	xiVflag  = 44 // inp_vflag: INP_IPV4, INP_IPV6
	xiFaddr  = 48 // inp_dependfaddr: in6_addr, or in_addr_4in6 (IPv4 in the last 4 bytes)
	xiLaddr  = 64 // inp_dependladdr
	xiMinLen = 80 // through the local address

	inpIPv4 = 0x1
	inpIPv6 = 0x2

	// struct xsocket_n
	xsoState    = 26 // so_state
	xsoProtocol = 36 // xso_protocol
	xsoFamily   = 40 // xso_family
	xsoUID      = 64 // so_uid
	xsoLastPid  = 68 // so_last_pid: the last process to use the socket
	xsoMinLen   = 76 // through so_e_pid, the end of the oldest layout

	ssNoFdRef = 0x0001 // SS_NOFDREF: no file refers to the socket any more

	// struct xtcpcb_n
	xtState  = 36 // t_state
	xtMinLen = 40

	darwinAFInet  = 2
	darwinAFInet6 = 30

	ipprotoTCP = 6
	ipprotoUDP = 17
)

// The BSD TCP states (bsd/netinet/tcp_fsm.h) mapped onto the Linux numbering
// of State.
var bsdTCPStates = [...]State{
	0:  StateClose,       // TCPS_CLOSED
	1:  StateListen,      // TCPS_LISTEN
	2:  StateSynSent,     // TCPS_SYN_SENT
	3:  StateSynRecv,     // TCPS_SYN_RECEIVED
	4:  StateEstablished, // TCPS_ESTABLISHED
	5:  StateCloseWait,   // TCPS_CLOSE_WAIT
	6:  StateFinWait1,    // TCPS_FIN_WAIT_1
	7:  StateClosing,     // TCPS_CLOSING
	8:  StateLastAck,     // TCPS_LAST_ACK
	9:  StateFinWait2,    // TCPS_FIN_WAIT_2
	10: StateTimeWait,    // TCPS_TIME_WAIT
}

func bsdTCPState(v uint32) State {
	if v < uint32(len(bsdTCPStates)) {
		return bsdTCPStates[v]
	}
	return StateUnknown
}

var errPcbTruncated = errors.New("pcblist: truncated")

// pcbGroup holds the records of one PCB while they are read.
type pcbGroup struct {
	inp, so, tp []byte
}

// ParsePcbList appends to dst the sockets in b, the value of the sysctl
// net.inet.tcp.pcblist_n (typ SOCK_STREAM) or net.inet.udp.pcblist_n
// (SOCK_DGRAM): both IPv4 and IPv6 sockets, told apart by the socket's
// family. On error (a record that overruns b or is too short for its kind,
// a PCB without its socket or TCP records, a missing closing xinpgen) the
// sockets of the PCBs before it are still appended.
//
// Pid is the socket's last user (so_last_pid), the PID macOS's netstat -v
// shows, -1 when none. A socket no file refers to any more in a state
// reached after close() is an orphan with Pid -1, as on Linux. Cookie is
// the PCB's generation count, unique for the life of the kernel within a
// protocol and kept from open to TIME_WAIT, tagged with the protocol; the
// user-space stack's flows have none (0).
func ParsePcbList(b []byte, typ uint8, dst []Socket) ([]Socket, error) {
	var proto int32
	switch typ {
	case SOCK_STREAM:
		proto = ipprotoTCP
	case SOCK_DGRAM:
		proto = ipprotoUDP
	default:
		return dst, fmt.Errorf("pcblist: unsupported socket type %d", typ)
	}
	le := binary.LittleEndian
	if len(b) < xinpgenLen {
		return dst, errPcbTruncated
	}
	xigLen := le.Uint32(b[0:4])
	if xigLen < xinpgenLen || int64(xigLen) > int64(len(b)) {
		return dst, fmt.Errorf("pcblist: bad xinpgen length %d (%d bytes)", xigLen, len(b))
	}
	gen := le.Uint64(b[8:16])

	var g pcbGroup
	flush := func() error {
		if g.inp == nil {
			return nil
		}
		defer func() { g = pcbGroup{} }()
		if g.so == nil || (typ == SOCK_STREAM && g.tp == nil) {
			return errors.New("pcblist: incomplete PCB record group")
		}
		if s, ok := pcbSocket(&g, typ, proto, gen); ok {
			dst = append(dst, s)
		}
		return nil
	}

	for off := roundup8(int(xigLen)); ; {
		if len(b)-off < 8 {
			return dst, errPcbTruncated
		}
		n := le.Uint32(b[off:])
		kind := le.Uint32(b[off+4:])
		if n < 8 {
			return dst, fmt.Errorf("pcblist: bad record length %d at offset %d", n, off)
		}
		if int64(n) > int64(len(b)-off) {
			return dst, errPcbTruncated
		}
		if n <= xinpgenLen {
			// The closing xinpgen: nothing else is this short (netstat
			// stops on the same test).
			return dst, flush()
		}
		rec := b[off : off+int(n)]
		switch kind {
		case xsoInpcb:
			if err := flush(); err != nil {
				return dst, err
			}
			if n < xiMinLen {
				return dst, fmt.Errorf("pcblist: xinpcb_n of %d bytes", n)
			}
			g.inp = rec
		case xsoSocket:
			if g.inp == nil || g.so != nil {
				return dst, fmt.Errorf("pcblist: unexpected xsocket_n at offset %d", off)
			}
			if n < xsoMinLen {
				return dst, fmt.Errorf("pcblist: xsocket_n of %d bytes", n)
			}
			g.so = rec
		case xsoTcpcb:
			if g.inp == nil || g.tp != nil {
				return dst, fmt.Errorf("pcblist: unexpected xtcpcb_n at offset %d", off)
			}
			if n < xtMinLen {
				return dst, fmt.Errorf("pcblist: xtcpcb_n of %d bytes", n)
			}
			g.tp = rec
		default:
			// Socket buffers and statistics; the kernel leaves the kind
			// of a buffer record 0 when the PCB has no socket.
		}
		off += roundup8(int(n))
	}
}

func roundup8(n int) int { return (n + 7) &^ 7 }

// pcbSocket turns one PCB's records into a Socket. ok is false for a PCB to
// skip: another protocol, not IP, or freed while the list was copied out.
func pcbSocket(g *pcbGroup, typ uint8, proto int32, gen uint64) (s Socket, ok bool) {
	le, be := binary.LittleEndian, binary.BigEndian
	inp, so := g.inp, g.so
	if int32(le.Uint32(so[xsoProtocol:])) != proto {
		return s, false
	}
	gencnt := le.Uint64(inp[xiGencnt:])
	if gencnt > gen {
		return s, false
	}
	vflag := inp[xiVflag]
	switch le.Uint32(so[xsoFamily:]) {
	case darwinAFInet:
		s.Family = AF_INET
	case darwinAFInet6:
		s.Family = AF_INET6
	case 0:
		// The user-space stack's flows say only which addresses they hold.
		switch {
		case vflag&inpIPv6 != 0:
			s.Family = AF_INET6
		case vflag&inpIPv4 != 0:
			s.Family = AF_INET
		default:
			return s, false
		}
	default:
		return s, false
	}
	if vflag&(inpIPv4|inpIPv6) == 0 {
		return s, false
	}
	laddr := pcbAddr(inp[xiLaddr:xiLaddr+16], s.Family, vflag)
	faddr := pcbAddr(inp[xiFaddr:xiFaddr+16], s.Family, vflag)
	s.Type = typ
	s.Local = netip.AddrPortFrom(laddr, be.Uint16(inp[xiLport:]))
	s.Remote = netip.AddrPortFrom(faddr, be.Uint16(inp[xiFport:]))
	s.UID = le.Uint32(so[xsoUID:])
	s.Pid = -1
	if pid := int32(le.Uint32(so[xsoLastPid:])); pid > 0 {
		s.Pid = pid
	}
	if gencnt != 0 {
		// TCP and UDP count generations separately.
		s.Cookie = gencnt << 1
		if typ == SOCK_DGRAM {
			s.Cookie |= 1
		}
	}
	if typ == SOCK_STREAM {
		s.State = bsdTCPState(le.Uint32(g.tp[xtState:]))
		if s.State == StateListen {
			s.Remote = netip.AddrPortFrom(unspecified(s.Family), 0)
		}
		if le.Uint16(so[xsoState:])&ssNoFdRef != 0 && orphaned(typ, s.State, 0) {
			// so_last_pid still names the process that closed it.
			s.Orphan = true
			s.Pid = -1
		}
	} else {
		// As the Linux kernel reports UDP sockets.
		s.State = StateClose
		if s.Remote.Port() != 0 || !faddr.IsUnspecified() {
			s.State = StateEstablished
		}
	}
	return s, true
}

// pcbAddr reads an address of a PCB. An IPv6 socket holds an IPv4 address
// (a peer reached through a v4-mapped address) in the last 4 bytes, marked
// INP_IPV4 without INP_IPV6; it is reported v4-mapped, as Linux does.
// Link-local addresses may carry the interface index in bytes 2-3 (the
// KAME scope embedding); they are always 0 on the wire.
func pcbAddr(b []byte, family uint8, vflag uint8) netip.Addr {
	if family == AF_INET {
		return netip.AddrFrom4([4]byte(b[12:16]))
	}
	if vflag&inpIPv6 == 0 {
		return netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: b[12], 13: b[13], 14: b[14], 15: b[15]})
	}
	a := [16]byte(b)
	if a[0] == 0xfe && a[1]&0xc0 == 0x80 || a[0] == 0xff && a[1]&0x0f <= 2 {
		a[2], a[3] = 0, 0
	}
	return netip.AddrFrom16(a)
}
