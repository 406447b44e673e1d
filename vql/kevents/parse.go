package kevents

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/netwatch-dfir/netwatch/vql/collector"
)

// Record layouts of bpf/kevents.bpf.c (struct conn_record, exec_record),
// in the host's byte order: the ring buffer is memory shared with the
// kernel.
const (
	taskLen      = 40 // struct task_facts
	connLen      = 64 + taskLen
	execLen      = 16 + taskLen + execFilename + execArgs
	execArgs     = 512
	execFilename = 256
)

var (
	errShort = errors.New("kevents: short record")
	errKind  = errors.New("kevents: unknown record kind")
)

// Parse decodes one ring buffer record. It keeps no reference to b, which
// the ring buffer reuses.
func Parse(b []byte) (Event, error) {
	if len(b) == 0 {
		return Event{}, errShort
	}
	switch Kind(b[0]) {
	case State, Accept:
		return parseConn(b)
	case Exec:
		return parseExec(b)
	}
	return Event{}, fmt.Errorf("%w %d", errKind, b[0])
}

func parseConn(b []byte) (Event, error) {
	if len(b) < connLen {
		return Event{}, fmt.Errorf("%w: %d bytes, want %d", errShort, len(b), connLen)
	}
	ne := binary.NativeEndian
	ev := Event{Kind: Kind(b[0]), Time: ne.Uint64(b[16:24])}
	s := &ev.Sock
	s.Family = b[1]
	s.Old, s.New = tcpState(b[2]), tcpState(b[3])
	s.Netns = ne.Uint32(b[4:8])
	s.Cookie = ne.Uint64(b[8:16])
	sport, dport := ne.Uint16(b[24:26]), ne.Uint16(b[26:28])
	switch s.Family {
	case collector.AF_INET:
		s.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[32:36])), sport)
		s.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[48:52])), dport)
	case collector.AF_INET6:
		s.Local = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[32:48])), sport)
		s.Remote = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[48:64])), dport)
	default:
		return Event{}, fmt.Errorf("kevents: socket family %d", s.Family)
	}
	ev.Task = parseTask(b[64:connLen])
	return ev, nil
}

func parseExec(b []byte) (Event, error) {
	if len(b) < execLen {
		return Event{}, fmt.Errorf("%w: %d bytes, want %d", errShort, len(b), execLen)
	}
	ne := binary.NativeEndian
	ev := Event{Kind: Exec, Time: ne.Uint64(b[8:16])}
	ev.Task = parseTask(b[16 : 16+taskLen])
	name := b[16+taskLen : 16+taskLen+execFilename]
	ev.Filename = string(cString(name))
	n := min(int(ne.Uint32(b[4:8])), execArgs)
	args := b[16+taskLen+execFilename:][:n]
	ev.Cmdline = bytes.Clone(args)
	return ev, nil
}

func parseTask(b []byte) Task {
	ne := binary.NativeEndian
	return Task{
		Pid:   int32(ne.Uint32(b[0:4])),
		Tid:   int32(ne.Uint32(b[4:8])),
		Ppid:  int32(ne.Uint32(b[8:12])),
		UID:   ne.Uint32(b[12:16]),
		Start: ne.Uint64(b[16:24]),
		Comm:  string(cString(b[24:40])),
	}
}

// tcpState maps the kernel's TCP_* numbers, which collector.State follows;
// anything else is StateUnknown rather than a value no table has.
func tcpState(v uint8) collector.State {
	if s := collector.State(v); s >= collector.StateEstablished && s <= collector.StateNewSynRecv {
		return s
	}
	return collector.StateUnknown
}

func cString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}
