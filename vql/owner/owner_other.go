//go:build !linux

package owner

import "github.com/netwatch-dfir/netwatch/vql/collector"

// Resolver does nothing here: the collector has the owner from the OS.
type Resolver struct{}

// New returns a Resolver; procRoot is unused outside Linux.
func New(procRoot string) *Resolver { return &Resolver{} }

// Resolve leaves Pid as the collector set it.
func (r *Resolver) Resolve(socks []collector.Socket) {}

// Stats returns zero counters: the Resolver does no work here.
func (r *Resolver) Stats() Stats { return Stats{} }
