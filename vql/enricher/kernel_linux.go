//go:build linux

package enricher

import (
	"bytes"
	"time"
)

// Task is what a kernel event tells about the process that ran it: enough
// to name a process that exits a millisecond later, before /proc could be
// read.
type Task struct {
	Pid, Ppid  int32
	UID        uint32
	Comm       string
	StartTicks uint64 // as /proc/<pid>/stat counts it
	CreateTime time.Time
}

// NoteExec remembers what a process executed (from an exec event), so
// that its connections are described with its executable and command line
// even once it is gone. Kept as long as the process cache keeps processes.
func (e *Enricher) NoteExec(t Task, exe string, cmdline []byte) {
	if e.execs.size == 0 {
		e.execs = newLRU(e.cache.size)
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	p := &Process{Pid: t.Pid, Ppid: t.Ppid, UID: int32(t.UID), Username: e.username(int32(t.UID)),
		CreateTime: t.CreateTime, StartTicks: t.StartTicks, Exe: exe,
		CommandLine: parseCmdline(cmdline), Name: processName(t.Comm, string(argv0), exe)}
	e.execs.add(key{t.Pid, t.StartTicks}, p)
}

// FromKernel describes the process of a kernel event, trying in turn: the
// cache; the exec events seen (no /proc read at all); /proc while the same
// process still runs; its parent's executable and command line for a
// child that forked without exec (same comm); the kernel's facts alone.
func (e *Enricher) FromKernel(t Task) *Process {
	k := key{t.Pid, t.StartTicks}
	if p := e.cache.get(k); p != nil {
		e.stats.Hits++
		return p
	}
	if e.execs.size > 0 {
		if p := e.execs.get(k); p != nil {
			// The comm may have changed since (prctl), the rest not.
			e.cache.add(k, p)
			e.stats.Hits++
			return p
		}
	}
	if p, err := e.Lookup(t.Pid); err == nil && p.StartTicks == t.StartTicks {
		return p
	}
	p := &Process{Pid: t.Pid, Ppid: t.Ppid, UID: int32(t.UID), Username: e.username(int32(t.UID)),
		CreateTime: t.CreateTime, StartTicks: t.StartTicks, Name: t.Comm}
	if parent, err := e.Lookup(t.Ppid); err == nil && processName(t.Comm, "", parent.Exe) == parent.Name {
		p.Exe, p.CommandLine, p.Name = parent.Exe, parent.CommandLine, parent.Name
	}
	e.cache.add(k, p)
	return p
}
