package collector

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
)

// The tables GetExtendedTcpTable (TCP_TABLE_OWNER_PID_ALL) and
// GetExtendedUdpTable (UDP_TABLE_OWNER_PID) write, as laid out in the Windows
// SDK's tcpmib.h and udpmib.h: a DWORD dwNumEntries, then the rows. Every
// field is a DWORD or a byte array, so rows are 4-byte aligned and nothing
// pads the count from the first row, for the IPv6 tables as well. Sizes and
// offsets were checked against mingw-w64's headers (sizeof, offsetof).
//
// Windows only runs little-endian, and the parser reads the bytes the same
// way on any host so that it is tested everywhere.
const (
	mibTableHdrLen = 4  // dwNumEntries
	mibTCPRowLen   = 24 // MIB_TCPROW_OWNER_PID
	mibTCP6RowLen  = 56 // MIB_TCP6ROW_OWNER_PID
	mibUDPRowLen   = 12 // MIB_UDPROW_OWNER_PID
	mibUDP6RowLen  = 28 // MIB_UDP6ROW_OWNER_PID
)

// MIB_TCP_STATE values (1..12) mapped onto the Linux numbering of State.
var mibTCPStates = [...]State{
	1:  StateClose,       // MIB_TCP_STATE_CLOSED
	2:  StateListen,      // MIB_TCP_STATE_LISTEN
	3:  StateSynSent,     // MIB_TCP_STATE_SYN_SENT
	4:  StateSynRecv,     // MIB_TCP_STATE_SYN_RCVD
	5:  StateEstablished, // MIB_TCP_STATE_ESTAB
	6:  StateFinWait1,    // MIB_TCP_STATE_FIN_WAIT1
	7:  StateFinWait2,    // MIB_TCP_STATE_FIN_WAIT2
	8:  StateCloseWait,   // MIB_TCP_STATE_CLOSE_WAIT
	9:  StateClosing,     // MIB_TCP_STATE_CLOSING
	10: StateLastAck,     // MIB_TCP_STATE_LAST_ACK
	11: StateTimeWait,    // MIB_TCP_STATE_TIME_WAIT
	12: StateClose,       // MIB_TCP_STATE_DELETE_TCB: being torn down
}

func mibTCPState(v uint32) State {
	if v < uint32(len(mibTCPStates)) {
		return mibTCPStates[v]
	}
	// Newer systems may report more (MIB_TCP_STATE_RESERVED, 100): keep
	// the socket, say its state is unknown.
	return StateUnknown
}

// ParseMibTable appends to dst the sockets in b, a table as
// GetExtendedTcpTable (typ SOCK_STREAM, TCP_TABLE_OWNER_PID_ALL) or
// GetExtendedUdpTable (SOCK_DGRAM, UDP_TABLE_OWNER_PID) writes it for family
// AF_INET or AF_INET6. b may be longer than the table (it is the buffer the
// table was written to). A table that claims more rows than b holds, a
// buffer too short for the count, or an unknown family or type is an error,
// and nothing is appended then.
//
// Windows reports the owner with each row: Pid is set, except for PID 0, the
// System Idle Process, which Windows names as the owner of sockets no
// process holds any more (TIME_WAIT): those get Pid -1, and TCP ones other
// than listeners are orphans. UDP rows carry no remote address: every UDP
// socket looks unconnected (remote 0.0.0.0:0 or [::]:0, state CLOSE).
func ParseMibTable(b []byte, family, typ uint8, dst []Socket) ([]Socket, error) {
	rowLen, err := mibRowLen(family, typ)
	if err != nil {
		return dst, err
	}
	if len(b) < mibTableHdrLen {
		return dst, fmt.Errorf("iphlpapi: table of %d bytes has no row count", len(b))
	}
	n := uint64(binary.LittleEndian.Uint32(b))
	if need := mibTableHdrLen + n*uint64(rowLen); need > uint64(len(b)) {
		return dst, fmt.Errorf("iphlpapi: table claims %d rows (%d bytes), buffer holds %d bytes", n, need, len(b))
	}
	for i := range int(n) {
		row := b[mibTableHdrLen+i*rowLen:][:rowLen]
		var s Socket
		switch {
		case typ == SOCK_STREAM && family == AF_INET:
			s = mibTCPRow(row)
		case typ == SOCK_STREAM:
			s = mibTCP6Row(row)
		case family == AF_INET:
			s = mibUDPRow(row)
		default:
			s = mibUDP6Row(row)
		}
		dst = append(dst, s)
	}
	return dst, nil
}

func mibRowLen(family, typ uint8) (int, error) {
	switch {
	case family == AF_INET && typ == SOCK_STREAM:
		return mibTCPRowLen, nil
	case family == AF_INET6 && typ == SOCK_STREAM:
		return mibTCP6RowLen, nil
	case family == AF_INET && typ == SOCK_DGRAM:
		return mibUDPRowLen, nil
	case family == AF_INET6 && typ == SOCK_DGRAM:
		return mibUDP6RowLen, nil
	}
	return 0, fmt.Errorf("iphlpapi: no table for family %d type %d", family, typ)
}

// mibPort reads a port: a DWORD whose low 16 bits hold it in network byte
// order; the upper bits may be uninitialized.
func mibPort(b []byte) uint16 { return binary.BigEndian.Uint16(b[:2]) }

// mibPid maps the owner PID: 0 (System Idle Process) means nobody.
func mibPid(b []byte) int32 {
	pid := binary.LittleEndian.Uint32(b)
	if pid == 0 || pid > math.MaxInt32 {
		return -1
	}
	return int32(pid)
}

// MIB_TCPROW_OWNER_PID: dwState, dwLocalAddr, dwLocalPort, dwRemoteAddr,
// dwRemotePort, dwOwningPid. Addresses are in network byte order.
func mibTCPRow(r []byte) Socket {
	s := Socket{
		Family: AF_INET,
		Type:   SOCK_STREAM,
		State:  mibTCPState(binary.LittleEndian.Uint32(r[0:4])),
		Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte(r[4:8])), mibPort(r[8:12])),
		Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte(r[12:16])), mibPort(r[16:20])),
		Pid:    mibPid(r[20:24]),
	}
	finishMibTCP(&s)
	return s
}

// MIB_TCP6ROW_OWNER_PID: ucLocalAddr[16], dwLocalScopeId, dwLocalPort,
// ucRemoteAddr[16], dwRemoteScopeId, dwRemotePort, dwState, dwOwningPid.
// Scope IDs are dropped, as the Linux collectors have none.
func mibTCP6Row(r []byte) Socket {
	s := Socket{
		Family: AF_INET6,
		Type:   SOCK_STREAM,
		State:  mibTCPState(binary.LittleEndian.Uint32(r[48:52])),
		Local:  netip.AddrPortFrom(netip.AddrFrom16([16]byte(r[0:16])), mibPort(r[20:24])),
		Remote: netip.AddrPortFrom(netip.AddrFrom16([16]byte(r[24:40])), mibPort(r[44:48])),
		Pid:    mibPid(r[52:56]),
	}
	finishMibTCP(&s)
	return s
}

func finishMibTCP(s *Socket) {
	if s.State == StateListen {
		// The remote fields of a listener mean nothing and may hold
		// garbage; netstat() shows them as zero, and so does Linux.
		s.Remote = netip.AddrPortFrom(unspecified(s.Family), 0)
	}
	s.Orphan = s.Pid < 0 && s.State != StateListen
}

// MIB_UDPROW_OWNER_PID: dwLocalAddr, dwLocalPort, dwOwningPid.
func mibUDPRow(r []byte) Socket {
	return Socket{
		Family: AF_INET,
		Type:   SOCK_DGRAM,
		State:  StateClose,
		Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte(r[0:4])), mibPort(r[4:8])),
		Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0),
		Pid:    mibPid(r[8:12]),
	}
}

// MIB_UDP6ROW_OWNER_PID: ucLocalAddr[16], dwLocalScopeId, dwLocalPort,
// dwOwningPid.
func mibUDP6Row(r []byte) Socket {
	return Socket{
		Family: AF_INET6,
		Type:   SOCK_DGRAM,
		State:  StateClose,
		Local:  netip.AddrPortFrom(netip.AddrFrom16([16]byte(r[0:16])), mibPort(r[20:24])),
		Remote: netip.AddrPortFrom(netip.IPv6Unspecified(), 0),
		Pid:    mibPid(r[24:28]),
	}
}

func unspecified(family uint8) netip.Addr {
	if family == AF_INET6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}
