//go:build linux

package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// holderMain holds -sockets loopback sockets (half as many connections, both
// ends in this process) and -procs idle processes, prints one READY line,
// and keeps them until stdin closes or -maxlife passes.
func holderMain(args []string) error {
	fs := flag.NewFlagSet("holder", flag.ContinueOnError)
	sockets := fs.Int("sockets", 1024, "sockets to hold (two per connection)")
	procs := fs.Int("procs", 0, "idle processes to start")
	fds := fs.Int("fds", 4, "non-socket fds per idle process")
	idlePath := fs.String("idle", "", "path of the idle helper")
	maxLife := fs.Duration("maxlife", time.Hour, "exit after this long in any case")
	if err := fs.Parse(args); err != nil {
		return err
	}
	done := stdinClosed()
	deadline := time.After(*maxLife)

	conns := *sockets / 2
	if err := raiseNofile(uint64(2*conns + 2**procs + 256)); err != nil {
		return err
	}
	held, port, err := openConnections(conns)
	defer closeAbortive(held) // no TIME_WAIT left behind for the next scenario
	if err != nil {
		return err
	}

	kids, err := startIdle(*idlePath, *procs, *fds, *maxLife)
	defer stopIdle(kids)
	if err != nil {
		return err
	}

	fmt.Printf("READY sockets=%d port=%d procs=%d\n", len(held), port, len(kids))
	select {
	case <-done:
	case <-deadline:
	}
	return nil
}

// openConnections opens n loopback connections to one listener, from source
// addresses 127.0.0.2, .3, ... (8000 connections each, well inside the
// ephemeral port range), and returns all 2n fds plus the listener.
func openConnections(n int) (fds []int, port uint16, err error) {
	lfd, port, err := listenLoopback(4096)
	if err != nil {
		return nil, 0, fmt.Errorf("listen: %w", err)
	}
	fds = append(fds, lfd)
	acc := startAcceptor(lfd, n)
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)
	const batch = 1000
	deadline := time.Now().Add(5 * time.Minute)
	for i := 0; i < n; i++ {
		fd, err := dialFrom(sourceAddr(2, i, 8000), dst)
		if err != nil {
			return append(fds, acc.take()...), port, fmt.Errorf("connection %d of %d: %w", i+1, n, err)
		}
		fds = append(fds, fd)
		if (i+1)%batch == 0 || i == n-1 {
			// Let the accept queue drain: a full backlog makes connect()
			// wait for a SYN retransmit.
			if err := acc.waitFor(i+1, deadline); err != nil {
				return append(fds, acc.take()...), port, err
			}
		}
	}
	return append(fds, acc.take()...), port, nil
}

// closeAbortive closes with SO_LINGER 0 (RST): no TIME_WAIT remnants.
func closeAbortive(fds []int) {
	for _, fd := range fds {
		_ = syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER,
			&syscall.Linger{Onoff: 1, Linger: 0})
		syscall.Close(fd)
	}
}

type idleKid struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startIdle starts n idle helpers and waits until each holds its fds.
func startIdle(path string, n, fds int, maxLife time.Duration) ([]idleKid, error) {
	if n == 0 {
		return nil, nil
	}
	if path == "" {
		return nil, errors.New("-idle path missing")
	}
	kids := make([]idleKid, 0, n)
	for i := 0; i < n; i++ {
		cmd := exec.Command(path, "idle", "-fds", fmt.Sprint(fds), "-maxlife", maxLife.String())
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return kids, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return kids, err
		}
		if err := cmd.Start(); err != nil {
			return kids, fmt.Errorf("idle process %d: %w", i+1, err)
		}
		kids = append(kids, idleKid{cmd, stdin})
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "ready\n" {
			return kids, fmt.Errorf("idle process %d did not get ready: %q %v", i+1, line, err)
		}
	}
	return kids, nil
}

func stopIdle(kids []idleKid) {
	for _, k := range kids {
		k.stdin.Close()
	}
	for _, k := range kids {
		waitOrKill(k.cmd, 5*time.Second)
	}
}

// waitOrKill waits for cmd, killing it (by its own pid) after grace.
func waitOrKill(cmd *exec.Cmd, grace time.Duration) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}

// idleMain holds -fds non-socket fds (/dev/null and pipe ends) and waits.
func idleMain(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	nfds := fs.Int("fds", 4, "non-socket fds to hold")
	maxLife := fs.Duration("maxlife", time.Hour, "exit after this long in any case")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var held []*os.File
	for len(held) < *nfds {
		if len(held)%2 == 0 && *nfds-len(held) >= 2 {
			r, w, err := os.Pipe()
			if err != nil {
				return err
			}
			held = append(held, r, w)
			continue
		}
		f, err := os.Open(os.DevNull)
		if err != nil {
			return err
		}
		held = append(held, f)
	}
	done := stdinClosed()
	fmt.Println("ready")
	select {
	case <-done:
	case <-time.After(*maxLife):
	}
	for _, f := range held {
		f.Close()
	}
	return nil
}
