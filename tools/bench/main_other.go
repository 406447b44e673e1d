//go:build !linux

// Command bench runs on Linux only (see main.go).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "tools/bench runs on Linux only")
	os.Exit(2)
}
