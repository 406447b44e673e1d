//go:build !linux

// Command kpacechild runs on Linux only (see main.go).
package main

func main() {}
