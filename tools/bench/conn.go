//go:build linux

package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// connMain is one short-lived process of the capture figure: it opens ONE
// loopback TCP connection, tells its parent the local port and its own
// process name, keeps the connection -life, closes it first (so the client
// side keeps a TIME_WAIT remnant) and exits at once.
func connMain(args []string) error {
	fs := flag.NewFlagSet("conn", flag.ContinueOnError)
	addr := fs.String("addr", "", "127.0.0.1:port to connect to")
	life := fs.Duration("life", 100*time.Millisecond, "connection lifetime")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !strings.HasPrefix(*addr, "127.") || *life > time.Minute {
		return fmt.Errorf("loopback only, at most a minute")
	}
	c, err := net.DialTimeout("tcp4", *addr, 5*time.Second)
	if err != nil {
		return err
	}
	comm, _ := os.ReadFile("/proc/self/comm")
	fmt.Printf("%d %s\n", c.LocalAddr().(*net.TCPAddr).Port, strings.TrimSpace(string(comm)))
	time.Sleep(*life)
	return c.Close()
}
