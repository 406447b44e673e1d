//go:build windows

package collector

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// The IP Helper API hands out the socket tables with the owner of each
// socket: one call per table, no per-process walk, no shelling out.
var (
	iphlpapi                = windows.NewLazySystemDLL("iphlpapi.dll")
	procGetExtendedTcpTable = iphlpapi.NewProc("GetExtendedTcpTable")
	procGetExtendedUdpTable = iphlpapi.NewProc("GetExtendedUdpTable")
)

const (
	tcpTableOwnerPidAll = 5 // TCP_TABLE_CLASS TCP_TABLE_OWNER_PID_ALL
	udpTableOwnerPid    = 1 // UDP_TABLE_CLASS UDP_TABLE_OWNER_PID

	mibInitialBuf = 16 << 10
	// A table can grow between the call that sizes it and the one that
	// fills it; each retry asks for the new size plus some room.
	mibTries = 4
)

var mibTables = []struct {
	kind   Kind
	family uint8
	typ    uint8
	af     uintptr
	proc   *windows.LazyProc
	class  uintptr
}{
	{TCP4, AF_INET, SOCK_STREAM, windows.AF_INET, procGetExtendedTcpTable, tcpTableOwnerPidAll},
	{TCP6, AF_INET6, SOCK_STREAM, windows.AF_INET6, procGetExtendedTcpTable, tcpTableOwnerPidAll},
	{UDP4, AF_INET, SOCK_DGRAM, windows.AF_INET, procGetExtendedUdpTable, udpTableOwnerPid},
	{UDP6, AF_INET6, SOCK_DGRAM, windows.AF_INET6, procGetExtendedUdpTable, udpTableOwnerPid},
}

// New returns the IP Helper collector. Only "auto" is accepted: netlink and
// procfs exist on Linux only.
func New(backend string) (Collector, error) {
	switch backend {
	case "", "auto":
	case "netlink", "procfs":
		return nil, fmt.Errorf("netstat_watch: backend %q is only available on Linux", backend)
	default:
		return nil, fmt.Errorf("netstat_watch: unknown socket collector backend %q (expected auto, netlink or procfs)", backend)
	}
	for _, p := range []*windows.LazyProc{procGetExtendedTcpTable, procGetExtendedUdpTable} {
		if err := p.Find(); err != nil {
			return nil, fmt.Errorf("iphlpapi: %w", err)
		}
	}
	return &mibCollector{buf: make([]byte, mibInitialBuf)}, nil
}

type mibCollector struct {
	buf    []byte // reused by every table of every tick
	closed bool
}

func (c *mibCollector) Name() string { return "iphlpapi" }

func (c *mibCollector) Close() error {
	c.closed = true
	return nil
}

func (c *mibCollector) Collect(kinds Kind, dst []Socket) ([]Socket, error) {
	if c.closed {
		return dst, errors.New("iphlpapi: collector closed")
	}
	for _, t := range mibTables {
		if kinds&t.kind == 0 {
			continue
		}
		b, err := c.table(t.proc, t.af, t.class)
		if err != nil {
			return dst, fmt.Errorf("iphlpapi: %s: %w", t.kind, err)
		}
		if dst, err = ParseMibTable(b, t.family, t.typ, dst); err != nil {
			return dst, fmt.Errorf("%s: %w", t.kind, err)
		}
	}
	return dst, nil
}

// table fills c.buf with one table, growing it as needed, and returns it.
func (c *mibCollector) table(proc *windows.LazyProc, af, class uintptr) ([]byte, error) {
	for range mibTries {
		size := uint32(len(c.buf))
		// GetExtendedTcpTable and GetExtendedUdpTable take the same
		// arguments: table, size, bOrder (FALSE: sorting costs and
		// nothing needs it), family, table class, reserved.
		r, _, _ := syscall.SyscallN(proc.Addr(),
			uintptr(unsafe.Pointer(&c.buf[0])), uintptr(unsafe.Pointer(&size)),
			0, af, class, 0)
		switch syscall.Errno(r) {
		case 0:
			return c.buf, nil
		case windows.ERROR_INSUFFICIENT_BUFFER:
			c.buf = make([]byte, int(size)+int(size)/4+4096)
		default:
			return nil, syscall.Errno(r)
		}
	}
	return nil, fmt.Errorf("table still growing after %d tries", mibTries)
}
