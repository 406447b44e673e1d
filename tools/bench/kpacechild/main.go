//go:build linux

// Command kpacechild is one short-lived process of tools/bench's kernel-pace
// scenario: one loopback TCP connection of a given lifetime, then exit.
// It is a program of its own, not a subcommand of the bench binary, so
// that a thousand of them a second are affordable: it links only the
// runtime, syscall and x/sys/unix, and starts in about a third of the bench binary's
// CPU (whose plotting and JSON packages initialise on every exec).
//
//	nwbench-kpace out PORT LIFE_US [NETNS]   connect to 127.0.0.1:PORT, send the pid (4 bytes),
//	                                          keep the connection LIFE_US µs, close, exit
//	nwbench-kpace in LIFE_US [NETNS]         listen on 127.0.0.1, write the port (2 bytes) to
//	                                          stdout, accept one connection, keep it LIFE_US µs, close, exit
//
// NETNS is a file of a network namespace (/run/netns/NAME) to enter first.
// Only 127.0.0.1 is ever used; a lifetime is at most a second, and accept
// gives up after 5 s.
package main

import (
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The sockets must be made on the thread that entered the namespace.
func init() { runtime.LockOSThread() }

func main() {
	if err := run(os.Args[1:]); err != nil {
		os.Stderr.WriteString("nwbench-kpace: " + err.Error() + "\n")
		os.Exit(1)
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

func run(args []string) error {
	if len(args) < 2 {
		return usageError("usage: out PORT LIFE_US [NETNS] | in LIFE_US [NETNS]")
	}
	mode, args := args[0], args[1:]
	port := 0
	if mode == "out" {
		p, err := strconv.Atoi(args[0])
		if err != nil || p <= 0 || p > 65535 || len(args) < 2 {
			return usageError("bad port")
		}
		port, args = p, args[1:]
	} else if mode != "in" {
		return usageError("mode is out or in")
	}
	us, err := strconv.Atoi(args[0])
	if err != nil || us < 0 || us > 1e6 {
		return usageError("lifetime is 0..1000000 µs")
	}
	life := time.Duration(us) * time.Microsecond
	if len(args) > 1 {
		if err := setns(args[1]); err != nil {
			return err
		}
	}
	lo := [4]byte{127, 0, 0, 1}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if mode == "out" {
		if err := syscall.Connect(fd, &syscall.SockaddrInet4{Addr: lo, Port: port}); err != nil {
			return err
		}
		pid := os.Getpid()
		if _, err := syscall.Write(fd, []byte{byte(pid), byte(pid >> 8), byte(pid >> 16), byte(pid >> 24)}); err != nil {
			return err
		}
		time.Sleep(life)
		return syscall.Close(fd)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: lo}); err != nil {
		return err
	}
	if err := syscall.Listen(fd, 1); err != nil {
		return err
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return err
	}
	p := sa.(*syscall.SockaddrInet4).Port
	// Accept gives up (EAGAIN) if nobody comes: never a stuck child.
	tv := syscall.Timeval{Sec: 5}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if _, err := os.Stdout.Write([]byte{byte(p >> 8), byte(p)}); err != nil {
		return err
	}
	c, _, err := syscall.Accept4(fd, syscall.SOCK_CLOEXEC)
	if err != nil {
		return err
	}
	syscall.Close(fd)
	time.Sleep(life)
	return syscall.Close(c)
}

// setns enters the network namespace of file path (this thread only: the
// thread is locked, and the sockets are made on it).
func setns(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}
