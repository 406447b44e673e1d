// Package kevents streams kernel events about TCP sockets and processes on
// Linux, from BPF programs attached to tracepoints: every TCP state change
// in every network namespace (with the socket cookie netlink's sock_diag
// also reports), the socket each accept() returned in the accepting
// process, and every exec.
//
// Polling the socket table misses what opens and closes between two polls
// and everything in other network namespaces; the kernel sees both. What
// the events cannot give (sockets open before start, UDP, a record the
// ring buffer had no room for) is for a slower reconciling snapshot.
//
// The records are parsed by pure functions (this file and parse.go), so
// they are tested on every platform; loading needs Linux >= 5.8 with BTF
// and CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN).
package kevents

import (
	"net/netip"

	"github.com/netwatch-dfir/netwatch/vql/collector"
)

// Kind says what a record is about.
type Kind uint8

const (
	// State is a TCP state change (tracepoint sock:inet_sock_set_state).
	State Kind = 1
	// Accept is an accept() or accept4() that returned a TCP socket, seen
	// from the accepting process.
	Accept Kind = 2
	// Exec is a process that executed a new program.
	Exec Kind = 3
)

func (k Kind) String() string {
	switch k {
	case State:
		return "state"
	case Accept:
		return "accept"
	case Exec:
		return "exec"
	}
	return "unknown"
}

// Task is the process that ran when the kernel emitted a record.
type Task struct {
	Pid  int32 // thread group id: the process
	Tid  int32
	Ppid int32
	UID  uint32
	// Start is the process's start time in nanoseconds since boot
	// (CLOCK_BOOTTIME), as /proc/<pid>/stat counts it (in clock ticks).
	Start uint64
	Comm  string
}

// StartTicks is Start in /proc/<pid>/stat's unit (USER_HZ, 100 per second
// on every architecture netwatch builds for), which with Pid identifies
// the process.
func (t *Task) StartTicks() uint64 { return t.Start / 1e7 }

// Sock is a TCP socket as a State or Accept record shows it.
type Sock struct {
	Family   uint8 // collector.AF_INET or AF_INET6
	Old, New collector.State
	Netns    uint32 // inode of the socket's network namespace
	// Cookie is the kernel's socket cookie, the one netlink reports; 0 on
	// an Accept record of a socket whose State records were all dropped.
	Cookie        uint64
	Local, Remote netip.AddrPort
}

// Event is one record.
type Event struct {
	Kind Kind
	Time uint64 // CLOCK_BOOTTIME nanoseconds
	Task Task
	Sock Sock // State and Accept

	// Exec only: the program's path as given to execve, and its
	// NUL-separated argv as /proc/<pid>/cmdline has it (the first 512
	// bytes).
	Filename string
	Cmdline  []byte
}

// ByOwner reports whether the record's Task is the owner of its socket:
// true for the transitions only a syscall of the process holding the
// socket makes (connect, listen, close or shutdown) and for accept.
// Transitions driven by packets run in softirq context, on whatever task
// the CPU happened to run: over loopback usually the peer, a plausible
// and wrong owner.
func (e *Event) ByOwner() bool {
	switch e.Kind {
	case Accept:
		return true
	case State:
		o, n := e.Sock.Old, e.Sock.New
		return o == collector.StateClose && (n == collector.StateSynSent || n == collector.StateListen) ||
			o == collector.StateEstablished && n == collector.StateFinWait1 ||
			o == collector.StateCloseWait && n == collector.StateLastAck
	}
	return false
}

// Socket is the record's socket in the collector's terms, Pid unknown.
func (e *Event) Socket() collector.Socket {
	return collector.Socket{
		Family: e.Sock.Family,
		Type:   collector.SOCK_STREAM,
		State:  e.Sock.New,
		Local:  e.Sock.Local,
		Remote: e.Sock.Remote,
		Cookie: e.Sock.Cookie,
		UID:    e.Task.UID,
		Pid:    -1,
	}
}
