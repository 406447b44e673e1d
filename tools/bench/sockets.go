//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// Raw loopback TCP sockets for the helpers: tens of thousands of fds held by
// one process, without the Go netpoller (the holder is meant to sit still).

// ipBindAddressNoPort lets bind() choose the source address only; the port
// is picked at connect() time and need only make the 4-tuple unique, so one
// source address gives a whole ephemeral range per destination.
const ipBindAddressNoPort = 24

// raiseNofile lifts RLIMIT_NOFILE to at least n. Without CAP_SYS_RESOURCE
// (as in this VM) the hard limit caps it, hence holders of at most
// holderShard sockets each.
func raiseNofile(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= n {
		return nil
	}
	want := lim
	want.Cur = n
	if want.Max < n {
		want.Max = n
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Max < n {
		return fmt.Errorf("RLIMIT_NOFILE: need %d fds, the hard limit is %d and cannot be raised here", n, lim.Max)
	}
	return nil
}

func sockaddr(ap netip.AddrPort) *syscall.SockaddrInet4 {
	return &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

// listenLoopback listens on 127.0.0.1 on a kernel-chosen port.
func listenLoopback(backlog int) (fd int, port uint16, err error) {
	fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err == nil {
		err = syscall.Listen(fd, backlog)
	}
	if err != nil {
		syscall.Close(fd)
		return -1, 0, err
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return -1, 0, err
	}
	return fd, uint16(sa.(*syscall.SockaddrInet4).Port), nil
}

// dialFrom opens a blocking connection from src (127.0.0.x, any port) to dst.
func dialFrom(src netip.Addr, dst netip.AddrPort) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	if err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: src.As4()}); err == nil {
		err = syscall.Connect(fd, sockaddr(dst))
	}
	if err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// sourceAddr spreads connections over 127.0.0.base, base+1, ... perAddr at a time.
func sourceAddr(base, i, perAddr int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 0, 0, byte(base + i/perAddr)})
}

// acceptor accepts on a listening fd in the background and keeps the fds.
type acceptor struct {
	mu   sync.Mutex
	cond *sync.Cond
	fds  []int
	err  error
}

func startAcceptor(lfd int, max int) *acceptor {
	a := &acceptor{}
	a.cond = sync.NewCond(&a.mu)
	go func() {
		for i := 0; i < max; i++ {
			nfd, _, err := syscall.Accept4(lfd, syscall.SOCK_CLOEXEC)
			a.mu.Lock()
			if err != nil {
				if err == syscall.EINTR || err == syscall.ECONNABORTED {
					a.mu.Unlock()
					i--
					continue
				}
				a.err = err
				a.cond.Broadcast()
				a.mu.Unlock()
				return
			}
			a.fds = append(a.fds, nfd)
			a.cond.Broadcast()
			a.mu.Unlock()
		}
	}()
	return a
}

// waitFor blocks until n connections were accepted, an error, or the deadline.
func (a *acceptor) waitFor(n int, deadline time.Time) error {
	go func() { // wake the waiter at the deadline
		time.Sleep(time.Until(deadline))
		a.mu.Lock()
		a.cond.Broadcast()
		a.mu.Unlock()
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.fds) < n && a.err == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("accepted %d of %d connections before the deadline", len(a.fds), n)
		}
		a.cond.Wait()
	}
	return a.err
}

// take removes and returns the accepted fds.
func (a *acceptor) take() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	fds := a.fds
	a.fds = nil
	return fds
}

// stdinClosed closes done when stdin reaches EOF: the parent went away.
func stdinClosed() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := os.Stdin.Read(buf); err != nil {
				close(done)
				return
			}
		}
	}()
	return done
}
