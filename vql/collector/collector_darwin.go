//go:build darwin

package collector

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// New returns the sysctl collector. Only "auto" is accepted: netlink and
// procfs exist on Linux only.
func New(backend string) (Collector, error) {
	switch backend {
	case "", "auto":
		return &pcbCollector{}, nil
	case "netlink", "procfs":
		return nil, fmt.Errorf("netstat_watch: backend %q is only available on Linux", backend)
	}
	return nil, fmt.Errorf("netstat_watch: unknown socket collector backend %q (expected auto, netlink or procfs)", backend)
}

// pcbCollector reads the kernel's PCB lists through sysctl, what netstat
// does: one call per protocol gives IPv4 and IPv6 sockets with their last
// owner, no per-process walk, no lsof.
type pcbCollector struct {
	closed bool
}

var pcbLists = []struct {
	kinds Kind
	name  string
	typ   uint8
}{
	{TCP4 | TCP6, "net.inet.tcp.pcblist_n", SOCK_STREAM},
	{UDP4 | UDP6, "net.inet.udp.pcblist_n", SOCK_DGRAM},
}

// pcbTries bounds the retries when the list grows between the call that
// sizes it and the one that copies it (ENOMEM).
const pcbTries = 4

func (c *pcbCollector) Name() string { return "sysctl" }

func (c *pcbCollector) Close() error {
	c.closed = true
	return nil
}

func (c *pcbCollector) Collect(kinds Kind, dst []Socket) ([]Socket, error) {
	if c.closed {
		return dst, errors.New("sysctl: collector closed")
	}
	for _, l := range pcbLists {
		if kinds&l.kinds == 0 {
			continue
		}
		var b []byte
		var err error
		for range pcbTries {
			if b, err = unix.SysctlRaw(l.name); err != unix.ENOMEM {
				break
			}
		}
		if err != nil {
			return dst, fmt.Errorf("sysctl %s: %w", l.name, err)
		}
		start := len(dst)
		if dst, err = ParsePcbList(b, l.typ, dst); err != nil {
			return dst, fmt.Errorf("sysctl %s: %w", l.name, err)
		}
		// One list holds both families: drop the one not asked for.
		if kinds&l.kinds != l.kinds {
			kept := dst[:start]
			for _, s := range dst[start:] {
				if kinds&s.Kind() != 0 {
					kept = append(kept, s)
				}
			}
			dst = kept
		}
	}
	return dst, nil
}
