package testutil

import (
	"io"
	"net"
)

// Serve accepts on ln until it is closed and holds each connection until
// the peer closes it (reading and dropping what it sends): the server side
// of the tests' loopback connections.
func Serve(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
}
