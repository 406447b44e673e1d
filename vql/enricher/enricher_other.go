//go:build !linux

package enricher

import (
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/shirou/gopsutil/v4/process"
)

// Enricher describes processes through the OS's process API (gopsutil:
// OpenProcess and the process snapshot on Windows, sysctl and libproc on
// macOS; nothing is run). It is not safe for concurrent use.
type Enricher struct {
	cache lru
	stats lookupStats
}

// New returns an Enricher that caches up to size processes. procRoot is
// unused outside Linux.
func New(procRoot string, size int) *Enricher {
	return &Enricher{cache: newLRU(size)}
}

// Lookup describes the process pid. Its create time is read each time, to
// tell the process from an earlier one that had the same PID, and the rest
// only for a process not in the cache.
//
// A process that refuses to be opened (a protected or SYSTEM process when
// not elevated) is still described as far as the OS allows: on Windows its
// name and parent come from the process snapshot, which needs no access to
// the process; what cannot be read stays empty.
func (e *Enricher) Lookup(pid int32) (p *Process, err error) {
	// gopsutil reads structures of other processes; a bug there must cost
	// one description, not the client.
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("enricher: describing pid %d: %v", pid, r)
		}
	}()
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

	p = &Process{Pid: pid, UID: -1}
	if ctErr == nil {
		p.CreateTime = time.UnixMilli(ms)
		p.StartTicks = uint64(ms)
	}
	// Details we may not read are left empty rather than failing the lookup.
	p.Ppid, p.Name = parentAndName(h)
	p.Exe, _ = h.Exe()
	if p.Name == "" && p.Exe != "" {
		p.Name = filepath.Base(p.Exe)
	}
	p.CommandLine, _ = h.Cmdline()
	if uids, err := h.Uids(); err == nil && len(uids) > 0 {
		p.UID = int32(uids[0])
	}
	if p.Username, err = h.Username(); err != nil && p.UID >= 0 {
		p.Username = strconv.Itoa(int(p.UID))
	}
	if ctErr == nil {
		e.cache.add(k, p)
	}
	return p, nil
}
