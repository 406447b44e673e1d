//go:build !linux && !windows && !darwin

package collector

import (
	"fmt"
	"runtime"
)

// New has no collector to offer on the other OSes (the BSDs, Solaris,
// AIX). The portable libraries answer there by running lsof or netstat,
// and netstat_watch never starts a program on an endpoint: the client
// artifact uses the stock netstat() on these OSes instead.
func New(backend string) (Collector, error) {
	return nil, fmt.Errorf("no socket table collector for %s (netstat_watch does not run lsof or netstat): use netstat() there",
		runtime.GOOS)
}
