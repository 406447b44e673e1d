// Command peer opens a TCP connection to itself on loopback, holds it, then
// closes it, so that tools/wine/smoke.sh can check that netstat_watch()
// reports it with this process's PID. It prints two JSON lines: its PID and
// listening port at once, the client's port once connected.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net"
	"os"
	"time"
)

func main() {
	delay := flag.Duration("delay", 0, "wait this long before connecting")
	hold := flag.Duration("hold", 3*time.Second, "keep the connection open this long")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	out.Encode(map[string]int{"pid": os.Getpid(), "listen": ln.Addr().(*net.TCPAddr).Port})
	time.Sleep(*delay)

	client, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	out.Encode(map[string]int{"client": client.LocalAddr().(*net.TCPAddr).Port})
	time.Sleep(*hold)
	// The client closes first: its side goes to TIME_WAIT.
	client.Close()
	time.Sleep(time.Second)
	server.Close()
	time.Sleep(time.Second)
}
