//go:build linux

package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// New returns the collector for backend: "netlink" (sock_diag), "procfs"
// (/proc/net/*) or "auto", which is netlink unless the netlink socket cannot
// be opened or its first dump fails, procfs then.
func New(backend string) (Collector, error) {
	switch backend {
	case "netlink":
		return newNetlink()
	case "procfs":
		return newProcfs(), nil
	case "auto":
		return auto(func() (Collector, error) { return newNetlink() }), nil
	}
	return nil, fmt.Errorf("netstat_watch: unknown socket collector backend %q (expected auto, netlink or procfs)", backend)
}

// auto is the collector open returns if its first dump works, else the
// /proc/net fallback saying why (tests pass an open that fails).
func auto(open func() (Collector, error)) Collector {
	c, err := open()
	if err != nil {
		return newProcfsFallback(err)
	}
	// Kernels without inet_diag or udp_diag fail here, not at open.
	if _, err := c.Collect(AllKinds, nil); err != nil {
		c.Close()
		return newProcfsFallback(err)
	}
	return c
}

// tables lists the four socket tables with what each backend needs to read
// one: the sock_diag request and the /proc/net file.
var tables = []struct {
	kind     Kind
	family   uint8
	typ      uint8
	protocol uint8
	path     string
}{
	{TCP4, AF_INET, SOCK_STREAM, unix.IPPROTO_TCP, "/proc/net/tcp"},
	{TCP6, AF_INET6, SOCK_STREAM, unix.IPPROTO_TCP, "/proc/net/tcp6"},
	{UDP4, AF_INET, SOCK_DGRAM, unix.IPPROTO_UDP, "/proc/net/udp"},
	{UDP6, AF_INET6, SOCK_DGRAM, unix.IPPROTO_UDP, "/proc/net/udp6"},
}

const (
	inetDiagReqLen = 56 // struct inet_diag_req_v2
	nlRecvBufLen   = 32 << 10
	// How long a dump may stall before Collect gives up rather than hang
	// the caller's loop.
	nlRecvTimeout = 5 // seconds
)

type netlinkCollector struct {
	// fd is -1 when an error left a dump unfinished: the kernel would
	// answer the next request on that socket with EBUSY until the old dump
	// is read to its end, so the socket is dropped and the next dump opens
	// a new one.
	fd     int
	closed bool
	netns  *os.File // not nil: the sockets are opened in that namespace
	seq    uint32
	buf    []byte
	req    [nlmsgHdrLen + inetDiagReqLen]byte

	// noCompat is set once the kernel refused the legacy combined TCP
	// dump; the two families are then dumped one after the other.
	noCompat bool
}

// inetDiagReqV1Len is the size of the legacy struct inet_diag_req.
const inetDiagReqV1Len = 60

func newNetlink() (*netlinkCollector, error) {
	c := &netlinkCollector{fd: -1, buf: make([]byte, nlRecvBufLen)}
	if err := c.open(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *netlinkCollector) open() error {
	var fd int
	var err error
	if c.netns != nil {
		fd, err = socketIn(c.netns)
	} else {
		fd, err = sockDiag()
	}
	if err != nil {
		return fmt.Errorf("netlink: socket: %w", err)
	}
	tv := unix.Timeval{Sec: nlRecvTimeout}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return fmt.Errorf("netlink: SO_RCVTIMEO: %w", err)
	}
	c.fd = fd
	return nil
}

func sockDiag() (int, error) {
	return unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
}

func (c *netlinkCollector) drop() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

func (c *netlinkCollector) Name() string { return "netlink" }

func (c *netlinkCollector) Close() error {
	c.closed = true
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

func (c *netlinkCollector) Collect(kinds Kind, dst []Socket) ([]Socket, error) {
	if c.closed {
		return dst, errors.New("netlink: collector closed")
	}
	// Every TCP dump walks the kernel's whole connection hash (262,144
	// buckets here) whatever the family: one walk for both families saves
	// about a third of a poll.
	if kinds&(TCP4|TCP6) == TCP4|TCP6 && !c.noCompat {
		start := len(dst)
		var err error
		if dst, err = c.dump(0, unix.IPPROTO_TCP, SOCK_STREAM, dst); err == nil {
			kinds &^= TCP4 | TCP6
		} else {
			// Kernels without the legacy interface: per family from now on.
			c.drop()
			c.noCompat = true
			dst = dst[:start]
		}
	}
	for _, t := range tables {
		if kinds&t.kind == 0 {
			continue
		}
		var err error
		if dst, err = c.dump(t.family, t.protocol, t.typ, dst); err != nil {
			c.drop()
			return dst, fmt.Errorf("netlink: %s: %w", t.kind, err)
		}
	}
	return dst, nil
}

// errLost is a reply datagram that did not fit in the receive buffer: the
// kernel dropped it, so the dump has to start over.
var errLost = errors.New("reply larger than the receive buffer")

// dump appends the sockets of one table.
func (c *netlinkCollector) dump(family, protocol, typ uint8, dst []Socket) ([]Socket, error) {
	start := len(dst)
	for range 3 {
		var err error
		dst, err = c.dumpOnce(family, protocol, typ, dst)
		if err != errLost {
			return dst, err
		}
		// recv has grown the buffer; the rest of the old dump goes away
		// with its socket.
		c.drop()
		dst = dst[:start]
	}
	return dst, errLost
}

func (c *netlinkCollector) dumpOnce(family, protocol, typ uint8, dst []Socket) ([]Socket, error) {
	if c.fd < 0 {
		if err := c.open(); err != nil {
			return dst, err
		}
	}
	if err := c.request(family, protocol); err != nil {
		return dst, err
	}
	for {
		b, err := c.recv()
		if err != nil {
			return dst, err
		}
		var done bool
		if dst, done, err = parseInetDiag(b, typ, c.seq, true, dst); err != nil || done {
			return dst, err
		}
	}
}

// request sends an inet_diag_req_v2 dump request for every socket of a family
// and protocol, with a sequence number of its own.
//
// Family 0 asks for TCP over both families at once, with the legacy
// TCPDIAG_GETSOCK request (struct inet_diag_req), which the kernel serves
// with a single walk of its hash tables.
func (c *netlinkCollector) request(family, protocol uint8) error {
	c.seq++
	ne := binary.NativeEndian
	if family == 0 {
		var r [nlmsgHdrLen + inetDiagReqV1Len]byte
		ne.PutUint32(r[0:4], uint32(len(r)))
		ne.PutUint16(r[4:6], tcpDiagGetSock)
		ne.PutUint16(r[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
		ne.PutUint32(r[8:12], c.seq)
		// idiag_family stays 0; idiag_states at offset 52: all.
		ne.PutUint32(r[nlmsgHdrLen+52:nlmsgHdrLen+56], 0xffffffff)
		return c.write(r[:])
	}
	r := c.req[:]
	clear(r)
	ne.PutUint32(r[0:4], uint32(len(r)))
	ne.PutUint16(r[4:6], sockDiagByFamily)
	ne.PutUint16(r[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(r[8:12], c.seq)
	p := r[nlmsgHdrLen:]
	p[0] = family
	p[1] = protocol
	ne.PutUint32(p[4:8], 0xffffffff) // idiag_states: all
	return c.write(r)
}

// write sends a request. An unconnected netlink socket sends to the kernel;
// write avoids the sockaddr sendto would need.
func (c *netlinkCollector) write(r []byte) error {
	for {
		_, err := unix.Write(c.fd, r)
		if err != unix.EINTR {
			return err
		}
	}
}

// recv reads one datagram into c.buf. One that does not fit is lost: recv
// then grows c.buf to its size and returns errLost.
func (c *netlinkCollector) recv() ([]byte, error) {
	for {
		// x/sys/unix has no recvfrom that skips the source address, which
		// would allocate at every call.
		n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(c.fd),
			uintptr(unsafe.Pointer(&c.buf[0])), uintptr(len(c.buf)),
			unix.MSG_TRUNC, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			return nil, fmt.Errorf("no reply from the kernel in %d s", nlRecvTimeout)
		case errno != 0:
			return nil, errno
		case int(n) > len(c.buf):
			// With MSG_TRUNC, netlink returns the datagram's real size.
			c.buf = make([]byte, max(nlmsgAlign(int(n)), 2*len(c.buf)))
			return nil, errLost
		}
		return c.buf[:n], nil
	}
}

type procfsCollector struct {
	buf []byte
	why string // why auto chose procfs over netlink
}

func newProcfs() *procfsCollector { return &procfsCollector{buf: make([]byte, 64<<10)} }

// newProcfsFallback remembers why netlink was not used, so that the one
// line the plugin logs at start says it.
func newProcfsFallback(why error) *procfsCollector {
	c := newProcfs()
	c.why = why.Error()
	return c
}

func (c *procfsCollector) Name() string {
	if c.why != "" {
		return "procfs (netlink unavailable: " + c.why + ")"
	}
	return "procfs"
}

func (c *procfsCollector) Close() error { return nil }

func (c *procfsCollector) Collect(kinds Kind, dst []Socket) ([]Socket, error) {
	for _, t := range tables {
		if kinds&t.kind == 0 {
			continue
		}
		b, err := c.read(t.path)
		if errors.Is(err, fs.ErrNotExist) && t.family == AF_INET6 {
			continue // IPv6 disabled
		}
		if err != nil {
			return dst, fmt.Errorf("procfs: %w", err)
		}
		// seq_file hands out whole rows, so a row that does not parse is
		// one of a format we do not know; all we can do is skip it.
		if dst, _, err = ParseProcNet(b, t.family, t.typ, dst); err != nil {
			return dst, fmt.Errorf("procfs: %s: %w", t.path, err)
		}
	}
	return dst, nil
}

// read reads the whole file into c.buf, growing it as needed.
func (c *procfsCollector) read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n := 0
	for {
		if n == len(c.buf) {
			c.buf = append(c.buf, make([]byte, len(c.buf))...)
		}
		m, err := f.Read(c.buf[n:])
		n += m
		if err == io.EOF {
			return c.buf[:n], nil
		}
		if err != nil {
			return nil, err
		}
	}
}
