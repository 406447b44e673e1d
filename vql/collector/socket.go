// Package collector takes cheap snapshots of the OS socket table.
//
// A snapshot holds every TCP and UDP socket of the requested kinds with its
// addresses, state and the kernel's identity for it (cookie, inode), but no
// per-process walk: finding owners is the owner package's job, done only for
// sockets not seen before. Each platform implements Collector in its own file
// (collector_linux.go, collector_windows.go, collector_darwin.go,
// collector_other.go); the parsers behind them are pure functions over bytes
// so they are tested everywhere.
package collector

import (
	"fmt"
	"net/netip"
	"strings"
)

// Address families and socket types, numbered as in netstat() (Linux values,
// which Velociraptor reports on every OS).
const (
	AF_INET  = 2
	AF_INET6 = 10

	SOCK_STREAM = 1
	SOCK_DGRAM  = 2
)

// State is a socket state, numbered as the Linux kernel's TCP states
// (include/net/tcp_states.h). Other platforms map their states onto these.
type State uint8

const (
	StateUnknown State = iota
	StateEstablished
	StateSynSent
	StateSynRecv
	StateFinWait1
	StateFinWait2
	StateTimeWait
	StateClose
	StateCloseWait
	StateLastAck
	StateListen
	StateClosing
	StateNewSynRecv
)

// The words netstat() uses, so that existing queries that match on Status
// keep working.
var stateNames = [...]string{
	StateUnknown:     "UNKNOWN",
	StateEstablished: "ESTAB",
	StateSynSent:     "SENT",
	StateSynRecv:     "SYN_RCVD",
	StateFinWait1:    "FIN_WAIT1",
	StateFinWait2:    "FIN_WAIT2",
	StateTimeWait:    "TIME_WAIT",
	StateClose:       "CLOSE",
	StateCloseWait:   "CLOSE_WAIT",
	StateLastAck:     "LAST_ACK",
	StateListen:      "LISTEN",
	StateClosing:     "CLOSING",
	StateNewSynRecv:  "SYN_RCVD",
}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE_%d", uint8(s))
}

// Kind is one of the socket tables: tcp, tcp6, udp, udp6.
type Kind uint8

const (
	TCP4 Kind = 1 << iota
	TCP6
	UDP4
	UDP6

	AllKinds = TCP4 | TCP6 | UDP4 | UDP6
)

var kindNames = []struct {
	name string
	kind Kind
}{{"tcp", TCP4}, {"tcp6", TCP6}, {"udp", UDP4}, {"udp6", UDP6}}

// ParseKinds turns names as netstat uses them (tcp, tcp6, udp, udp6) into a
// Kind set. No names means all kinds.
func ParseKinds(names []string) (Kind, error) {
	if len(names) == 0 {
		return AllKinds, nil
	}
	var k Kind
next:
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		for _, kn := range kindNames {
			if kn.name == n {
				k |= kn.kind
				continue next
			}
		}
		return 0, fmt.Errorf("unknown kind %q (expected tcp, tcp6, udp or udp6)", n)
	}
	return k, nil
}

func (k Kind) String() string {
	var parts []string
	for _, kn := range kindNames {
		if k&kn.kind != 0 {
			parts = append(parts, kn.name)
		}
	}
	return strings.Join(parts, ",")
}

// KindOf returns the table a socket of this family and type belongs to.
func KindOf(family, typ uint8) Kind {
	switch {
	case family == AF_INET && typ == SOCK_STREAM:
		return TCP4
	case family == AF_INET6 && typ == SOCK_STREAM:
		return TCP6
	case family == AF_INET && typ == SOCK_DGRAM:
		return UDP4
	case family == AF_INET6 && typ == SOCK_DGRAM:
		return UDP6
	}
	return 0
}

// Socket is one entry of the socket table.
type Socket struct {
	Family uint8 // AF_INET or AF_INET6
	Type   uint8 // SOCK_STREAM (TCP) or SOCK_DGRAM (UDP)
	State  State
	Local  netip.AddrPort
	Remote netip.AddrPort

	// Kernel identity. Cookie is unique for the life of the kernel and
	// survives the move to TIME_WAIT (the netlink cookie on Linux, the PCB
	// generation count on macOS); Inode is the socket's
	// inode, 0 once no process holds the socket any more.
	Cookie uint64
	Inode  uint64
	UID    uint32

	// Pid owns the socket, -1 while unknown. Collectors that get the owner
	// from the OS (Windows) fill it; on Linux the owner package does.
	Pid int32

	// Orphan is true when no process holds the socket any more (TIME_WAIT,
	// or a FIN_WAIT remnant after close()).
	Orphan bool
}

// Kind returns the table the socket is in.
func (s *Socket) Kind() Kind { return KindOf(s.Family, s.Type) }

// IsTCP reports whether the socket is a stream socket.
func (s *Socket) IsTCP() bool { return s.Type == SOCK_STREAM }

// Listening reports whether the socket waits for peers rather than talks to
// one: a TCP listener or an unconnected UDP socket.
func (s *Socket) Listening() bool {
	if s.IsTCP() {
		return s.State == StateListen
	}
	return s.Remote.Port() == 0 && (!s.Remote.Addr().IsValid() || s.Remote.Addr().IsUnspecified())
}

// Closed reports whether the owner is done with the socket: a TCP socket in
// TIME_WAIT or CLOSE, or any socket no process holds any more.
func (s *Socket) Closed() bool {
	if s.Orphan {
		return true
	}
	return s.IsTCP() && (s.State == StateTimeWait || s.State == StateClose)
}

// FamilyString is netstat()'s name for the family.
func (s *Socket) FamilyString() string {
	switch s.Family {
	case AF_INET:
		return "IPv4"
	case AF_INET6:
		return "IPv6"
	}
	return fmt.Sprintf("%d", s.Family)
}

// TypeString is netstat()'s name for the type.
func (s *Socket) TypeString() string {
	switch s.Type {
	case SOCK_STREAM:
		return "TCP"
	case SOCK_DGRAM:
		return "UDP"
	}
	return fmt.Sprintf("%d", s.Type)
}

// Collector takes snapshots of the socket table.
type Collector interface {
	// Collect appends every socket of the given kinds to dst and returns
	// it. Reusing dst across ticks keeps polling allocation-free.
	Collect(kinds Kind, dst []Socket) ([]Socket, error)
	// Name says which backend answers (netlink, procfs, ...).
	Name() string
	Close() error
}
