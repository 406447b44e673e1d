//go:build !linux

package enricher

import (
	"time"

	"github.com/shirou/gopsutil/v4/process"
)

// Enricher describes processes through the OS's process API. It is not
// safe for concurrent use.
type Enricher struct {
	cache lru
	stats Stats
}

// New returns an Enricher that caches up to size processes. procRoot is
// unused outside Linux.
func New(procRoot string, size int) *Enricher {
	return &Enricher{cache: newLRU(size)}
}

// Lookup describes the process pid. Its create time is read each time, to
// tell the process from an earlier one that had the same PID, and the rest
// only for a process not in the cache.
func (e *Enricher) Lookup(pid int32) (*Process, error) {
	h, err := process.NewProcess(pid)
	if err != nil {
		return nil, err
	}
	// Without a create time the process cannot be told from a later one
	// with its PID: describe it, but do not cache it.
	ms, ctErr := h.CreateTime()
	k := key{pid, uint64(ms)}
	if ctErr == nil {
		if p := e.cache.get(k); p != nil {
			e.stats.Hits++
			return p, nil
		}
	}
	e.stats.Misses++

	p := &Process{Pid: pid, UID: -1, StartTicks: uint64(ms)}
	if ctErr == nil {
		p.CreateTime = time.UnixMilli(ms)
	}
	// Details we may not read are left empty rather than failing the lookup.
	p.Ppid, _ = h.Ppid()
	p.Name, _ = h.Name()
	p.Exe, _ = h.Exe()
	p.CommandLine, _ = h.Cmdline()
	p.Username, _ = h.Username()
	if uids, err := h.Uids(); err == nil && len(uids) > 0 {
		p.UID = int32(uids[0])
	}
	if ctErr == nil {
		e.cache.add(k, p)
	}
	return p, nil
}
