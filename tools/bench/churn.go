//go:build linux

package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// churnMain opens -rate loopback connections per second for -for, each held
// for a random 0..-hold and then closed by the client (which leaves the
// usual TIME_WAIT remnant), then prints one DONE line. Both ends are in
// this process; at most rate*for connections are ever opened.
func churnMain(args []string) error {
	fs := flag.NewFlagSet("churn", flag.ContinueOnError)
	rate := fs.Int("rate", 500, "connections per second")
	dur := fs.Duration("for", time.Minute, "how long to churn")
	hold := fs.Duration("hold", 500*time.Millisecond, "longest time a connection stays open")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate <= 0 || *rate > 5000 || *dur <= 0 || *dur > 10*time.Minute {
		return fmt.Errorf("rate must be 1..5000 and for 0..10m")
	}
	done := stdinClosed()
	if err := raiseNofile(uint64(4 * *rate)); err != nil {
		return err
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	dst := netip.MustParseAddrPort(ln.Addr().String())

	var wg sync.WaitGroup
	var opened, failed atomic.Int64
	rng := rand.New(rand.NewSource(1))
	total := int(float64(*rate) * dur.Seconds())
	const tick = 10 * time.Millisecond
	perTick := float64(*rate) * tick.Seconds()
	start := time.Now()
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	due := 0.0
loop:
	for n := 0; n < total; {
		select {
		case <-done:
			break loop
		case <-ticker.C:
		}
		if time.Since(start) > *dur+5*time.Second {
			break loop // cannot keep up: stop on time anyway
		}
		due += perTick
		for ; due >= 1 && n < total; due-- {
			fd, err := dialFrom(sourceAddr(10, n%4, 1), dst)
			n++
			if err != nil {
				failed.Add(1)
				continue
			}
			opened.Add(1)
			wg.Add(1)
			time.AfterFunc(time.Duration(rng.Int63n(int64(*hold)+1)), func() {
				syscall.Close(fd)
				wg.Done()
			})
		}
	}
	wg.Wait()
	fmt.Printf("DONE opened=%d failed=%d in=%s\n", opened.Load(), failed.Load(),
		time.Since(start).Round(time.Millisecond))
	return nil
}
