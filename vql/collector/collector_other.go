//go:build !linux && !windows && !darwin

package collector

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	psnet "github.com/shirou/gopsutil/v4/net"
)

// portable asks gopsutil for the socket table. It is the stand-in on the
// OSes without a native collector (Linux, Windows and macOS have one): the
// BSDs, Solaris, AIX. It is untested there, and gopsutil may shell out or
// walk every process to answer, so it may be slow.
type portable struct{}

// New returns the collector for this OS. backend is accepted for
// compatibility with the Linux collector; only "auto" means anything here.
func New(backend string) (Collector, error) {
	switch backend {
	case "", "auto":
		return portable{}, nil
	case "netlink", "procfs":
		return nil, fmt.Errorf("backend %q is only available on Linux", backend)
	}
	return nil, fmt.Errorf("unknown backend %q (expected auto, netlink or procfs)", backend)
}

func (portable) Name() string { return "gopsutil" }
func (portable) Close() error { return nil }

var portableKinds = []struct {
	kind   Kind
	name   string
	family uint8
	typ    uint8
}{
	{TCP4, "tcp4", AF_INET, SOCK_STREAM},
	{TCP6, "tcp6", AF_INET6, SOCK_STREAM},
	{UDP4, "udp4", AF_INET, SOCK_DGRAM},
	{UDP6, "udp6", AF_INET6, SOCK_DGRAM},
}

func (portable) Collect(kinds Kind, dst []Socket) ([]Socket, error) {
	for _, k := range portableKinds {
		if kinds&k.kind == 0 {
			continue
		}
		conns, err := psnet.ConnectionsWithoutUidsWithContext(context.Background(), k.name)
		if err != nil {
			return dst, fmt.Errorf("%s: %w", k.name, err)
		}
		for _, c := range conns {
			s := Socket{Family: k.family, Type: k.typ, Pid: c.Pid,
				State: stateFromWord(c.Status)}
			s.Local = addrPort(c.Laddr.IP, c.Laddr.Port, k.family)
			s.Remote = addrPort(c.Raddr.IP, c.Raddr.Port, k.family)
			if k.typ == SOCK_DGRAM {
				s.State = StateClose
				if s.Remote.Port() != 0 {
					s.State = StateEstablished
				}
			}
			// PID 0 is the System Idle Process, which Windows names as the
			// owner of sockets no process holds any more (TIME_WAIT).
			if s.Pid == 0 {
				s.Pid = -1
				s.Orphan = s.State != StateListen
			}
			dst = append(dst, s)
		}
	}
	return dst, nil
}

func addrPort(ip string, port uint32, family uint8) netip.AddrPort {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		if family == AF_INET6 {
			a = netip.IPv6Unspecified()
		} else {
			a = netip.IPv4Unspecified()
		}
	}
	return netip.AddrPortFrom(a, uint16(port))
}

// stateFromWord maps gopsutil's state words onto the common states.
func stateFromWord(w string) State {
	switch strings.ToUpper(w) {
	case "ESTABLISHED":
		return StateEstablished
	case "SYN_SENT":
		return StateSynSent
	case "SYN_RECV", "SYN_RECEIVED":
		return StateSynRecv
	case "FIN_WAIT1", "FIN_WAIT_1":
		return StateFinWait1
	case "FIN_WAIT2", "FIN_WAIT_2":
		return StateFinWait2
	case "TIME_WAIT":
		return StateTimeWait
	case "CLOSE", "CLOSED", "DELETE_TCB":
		return StateClose
	case "CLOSE_WAIT":
		return StateCloseWait
	case "LAST_ACK":
		return StateLastAck
	case "LISTEN":
		return StateListen
	case "CLOSING":
		return StateClosing
	}
	return StateUnknown
}
