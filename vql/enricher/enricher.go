// Package enricher describes the process behind a PID: name, executable,
// command line, user, parent and start time.
//
// A socket poller asks about the same few processes over and over, so
// descriptions are cached. The cache is keyed by PID and start time, not by
// PID alone: PIDs are reused, and a socket opened by a new process must not
// be blamed on an old one that had its PID.
package enricher

import (
	"container/list"
	"time"
)

// Process describes a process. Values returned by Lookup are shared: treat
// them as immutable.
type Process struct {
	Pid, Ppid int32

	// Name is the name pslist() gives the process: the kernel's command
	// name, or the longer name it is a truncation of.
	Name        string
	Exe         string // path of the executable; "" when not readable
	CommandLine string // arguments separated by spaces
	Username    string // owner of the real UID; the UID itself when unknown
	UID         int32  // real UID; -1 where the OS has none
	CreateTime  time.Time

	// StartTicks is the start time as the OS counts it (clock ticks since
	// boot on Linux, CreateTime in milliseconds elsewhere): with Pid, the
	// identity of the process.
	StartTicks uint64
}

// lookupStats counts Lookups (for the tests of the cache).
type lookupStats struct {
	Hits   uint64 // answered from the cache
	Misses uint64 // had to read the process's details
	Cached int    // processes in the cache
}

type key struct {
	pid   int32
	start uint64
}

type lruEntry struct {
	key  key
	proc *Process
}

// lru holds the most recently looked up processes.
type lru struct {
	size  int
	order list.List // of *lruEntry, most recent first
	items map[key]*list.Element
}

func newLRU(size int) lru {
	return lru{size: max(size, 1), items: make(map[key]*list.Element)}
}

func (c *lru) get(k key) *Process {
	el, ok := c.items[k]
	if !ok {
		return nil
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruEntry).proc
}

func (c *lru) add(k key, p *Process) {
	if el, ok := c.items[k]; ok {
		el.Value.(*lruEntry).proc = p
		c.order.MoveToFront(el)
		return
	}
	c.items[k] = c.order.PushFront(&lruEntry{k, p})
	if c.order.Len() > c.size {
		el := c.order.Back()
		c.order.Remove(el)
		delete(c.items, el.Value.(*lruEntry).key)
	}
}

// counters returns the counts since New.
func (e *Enricher) counters() lookupStats {
	st := e.stats
	st.Cached = e.cache.order.Len()
	return st
}
