// Package watchstate reads and writes netstat_watch's state file: the
// connections a watcher has reported and that are still open, kept on disk so
// that a watcher started after a restart of the client reports what changed
// while nobody watched (a connection opened, or closed, during the downtime)
// instead of taking its first snapshot as a silent baseline.
//
// The file is one header line and a JSON body:
//
//	netwatch-netstat_watch-state 1 <body length> <crc32 of body, hex>
//	{"saved": ..., "boot": ..., "kinds": "tcp,udp", "next_id": 42,
//	 "conns": [...], "procs": [...]}
//
// The header tells a truncated, corrupted or foreign file from a state file;
// the body stays readable for a responder (process details are listed once
// and referred to by index). parse is a parser of on-disk data: it checks
// every field and never panics (FuzzParse).
package watchstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/netwatch-dfir/netwatch/internal/atomicfile"
	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/enricher"
	"github.com/netwatch-dfir/netwatch/vql/tracker"
)

const (
	magic   = "netwatch-netstat_watch-state"
	version = 1

	// MaxSize bounds what Load reads: 64 MiB is about 300,000 connections,
	// far more than a socket table holds.
	MaxSize = 64 << 20
)

// File is the content of a state file.
type File struct {
	SavedAt time.Time
	Boot    string         // the boot it was saved in (BootID)
	Kinds   collector.Kind // the socket tables the watcher read
	NextID  uint64         // tracker.NextID
	// Conns are open connections and the closed ones whose remnant was
	// still in the table. Info is nil when the process was not resolved.
	Conns []tracker.Saved
}

type fileJSON struct {
	Saved  time.Time  `json:"saved"`
	Boot   string     `json:"boot"`
	Kinds  string     `json:"kinds"`
	NextID uint64     `json:"next_id"`
	Procs  []procJSON `json:"procs"`
	Conns  []connJSON `json:"conns"`
}

type procJSON struct {
	Pid        int32     `json:"pid"`
	Ppid       int32     `json:"ppid"`
	Name       string    `json:"name"`
	Exe        string    `json:"exe"`
	CmdLine    string    `json:"cmdline"`
	Username   string    `json:"username"`
	UID        int32     `json:"uid"`
	CreateTime time.Time `json:"create_time"`
	StartTicks uint64    `json:"start_ticks"`
}

type connJSON struct {
	ID        uint64    `json:"id"`
	Kind      string    `json:"kind"` // tcp, tcp6, udp, udp6
	Local     string    `json:"local"`
	Remote    string    `json:"remote"`
	State     uint8     `json:"state"`
	Cookie    uint64    `json:"cookie,omitempty"`
	Inode     uint64    `json:"inode,omitempty"`
	Netns     uint32    `json:"netns,omitempty"` // another network namespace's inode; 0: the watcher's
	UID       uint32    `json:"uid"`
	Orphan    bool      `json:"orphan,omitempty"`
	Pid       int32     `json:"pid"`
	Direction string    `json:"direction"`
	FirstSeen time.Time `json:"first_seen"`
	Closed    bool      `json:"closed,omitempty"`
	Proc      int       `json:"proc,omitempty"` // 1 + index in procs; 0: none
}

func header(body []byte) []byte {
	return fmt.Appendf(nil, "%s %d %d %08x\n", magic, version, len(body), crc32.ChecksumIEEE(body))
}

// appendBody appends the JSON body of f to dst, a connection at a time:
// a table of tens of thousands of connections is never held twice (as
// records and as JSON) on the way to the disk. The processes come after
// the connections that refer to them (JSON objects are unordered).
func appendBody(dst []byte, f *File) ([]byte, error) {
	head, err := json.Marshal(struct {
		Saved  time.Time `json:"saved"`
		Boot   string    `json:"boot"`
		Kinds  string    `json:"kinds"`
		NextID uint64    `json:"next_id"`
	}{f.SavedAt.UTC(), f.Boot, f.Kinds.String(), f.NextID})
	if err != nil {
		return dst, err
	}
	dst = append(dst, head[:len(head)-1]...) // without its closing brace
	dst = append(dst, `,"conns":[`...)
	procs := make(map[*enricher.Process]int)
	var order []*enricher.Process
	for i := range f.Conns {
		c := &f.Conns[i]
		n := 0
		if p := c.Info; p != nil {
			var ok bool
			if n, ok = procs[p]; !ok {
				order = append(order, p)
				n = len(order)
				procs[p] = n
			}
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendConn(dst, c, n)
	}
	dst = append(dst, `],"procs":[`...)
	for i, p := range order {
		b, err := json.Marshal(procJSON{Pid: p.Pid, Ppid: p.Ppid, Name: p.Name,
			Exe: p.Exe, CmdLine: p.CommandLine, Username: p.Username, UID: p.UID,
			CreateTime: p.CreateTime.UTC(), StartTicks: p.StartTicks})
		if err != nil {
			return dst, err
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, b...)
	}
	return append(dst, "]}"...), nil
}

// appendConn appends the JSON of one connection, as json.Marshal would
// render its connJSON, without the reflection and the allocations: a
// state is written every few seconds and may hold tens of thousands.
func appendConn(dst []byte, c *tracker.Saved, proc int) []byte {
	s := &c.Socket
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, c.ID, 10)
	dst = append(dst, `,"kind":`...)
	dst = appendString(dst, s.Kind().String())
	dst = append(dst, `,"local":`...)
	dst = appendAddrPort(dst, s.Local)
	dst = append(dst, `,"remote":`...)
	dst = appendAddrPort(dst, s.Remote)
	dst = append(dst, `,"state":`...)
	dst = strconv.AppendUint(dst, uint64(s.State), 10)
	if s.Cookie != 0 {
		dst = append(dst, `,"cookie":`...)
		dst = strconv.AppendUint(dst, s.Cookie, 10)
	}
	if s.Inode != 0 {
		dst = append(dst, `,"inode":`...)
		dst = strconv.AppendUint(dst, s.Inode, 10)
	}
	if c.Netns != 0 {
		dst = append(dst, `,"netns":`...)
		dst = strconv.AppendUint(dst, uint64(c.Netns), 10)
	}
	dst = append(dst, `,"uid":`...)
	dst = strconv.AppendUint(dst, uint64(s.UID), 10)
	if s.Orphan {
		dst = append(dst, `,"orphan":true`...)
	}
	dst = append(dst, `,"pid":`...)
	dst = strconv.AppendInt(dst, int64(c.Pid), 10)
	dst = append(dst, `,"direction":`...)
	dst = appendString(dst, string(c.Direction))
	dst = append(dst, `,"first_seen":"`...)
	dst = c.FirstSeen.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')
	if c.Closed {
		dst = append(dst, `,"closed":true`...)
	}
	if proc != 0 {
		dst = append(dst, `,"proc":`...)
		dst = strconv.AppendInt(dst, int64(proc), 10)
	}
	return append(dst, '}')
}

// appendAddrPort appends addrPortString(a) as a JSON string. An address
// needs no escape, but a zone (fe80::1%eth0) is a name: it may.
func appendAddrPort(dst []byte, a netip.AddrPort) []byte {
	if a.Addr().Zone() != "" {
		return appendString(dst, addrPortString(a))
	}
	dst = append(dst, '"')
	if a.IsValid() {
		dst = a.AppendTo(dst)
	}
	return append(dst, '"')
}

// appendString appends s as a JSON string: as is when it needs no escape
// (the addresses, kinds and directions always), else through json.Marshal.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// WriteFile replaces the file at path with f atomically: a reader (or a
// watcher started after a crash) sees the old state or the new, never a
// part. The file is readable by its owner only: it names processes and
// their command lines. The body is encoded into buf, which is returned for
// the next call: a watcher that saves its state every few seconds reuses
// one buffer instead of allocating the whole file each time.
func WriteFile(path string, f *File, buf []byte) ([]byte, error) {
	body, err := appendBody(buf[:0], f)
	if err != nil {
		return body, err
	}
	return body, atomicfile.Write(path, 0o600, header(body), body, []byte{'\n'})
}

// parse reads a state file. Any defect is an error: a state that is not
// exactly what a watcher wrote must not be trusted.
func parse(b []byte) (*File, error) {
	line, body, ok := bytes.Cut(b, []byte("\n"))
	if !ok {
		return nil, errors.New("no header line")
	}
	hdr := strings.Split(string(line), " ")
	if len(hdr) != 4 || hdr[0] != magic {
		return nil, errors.New("not a netstat_watch state file")
	}
	if v, err := strconv.Atoi(hdr[1]); err != nil || v != version {
		return nil, fmt.Errorf("unsupported version %q", hdr[1])
	}
	size, err := strconv.ParseUint(hdr[2], 10, 32)
	if err != nil {
		return nil, fmt.Errorf("bad length %q", hdr[2])
	}
	sum, err := strconv.ParseUint(hdr[3], 16, 32)
	if err != nil || len(hdr[3]) != 8 {
		return nil, fmt.Errorf("bad checksum %q", hdr[3])
	}
	// The body and one newline, nothing else.
	if uint64(len(body)) != size+1 || body[size] != '\n' {
		return nil, fmt.Errorf("truncated or extended: %d bytes after the header, want %d", len(body), size+1)
	}
	body = body[:size]
	if crc32.ChecksumIEEE(body) != uint32(sum) {
		return nil, errors.New("checksum mismatch")
	}

	// Sized up front: decoding appends to the slice, which would grow by
	// doubling through tens of thousands of connections.
	// (A connection takes over 100 bytes: a body of repeated keys does
	// not make it reserve more.)
	fj := fileJSON{Conns: make([]connJSON, 0,
		min(bytes.Count(body, []byte(`{"id":`)), len(body)/100))}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fj); err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("body: data after the JSON object")
	}
	return fromJSON(&fj)
}

// writable: a time the next save can write again. RFC 3339 (and so JSON)
// only has years 0 to 9999 in UTC; "0000-01-01T00:00:00+01:00" parses but
// is year -1 in UTC, and a state holding it could never be saved again.
func writable(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

func fromJSON(fj *fileJSON) (*File, error) {
	f := &File{SavedAt: fj.Saved.UTC(), Boot: fj.Boot, NextID: fj.NextID}
	if f.SavedAt.IsZero() {
		return nil, errors.New("no saved time")
	}
	if !writable(f.SavedAt) {
		return nil, fmt.Errorf("saved time %v out of range", f.SavedAt)
	}
	if f.Boot == "" {
		return nil, errors.New("no boot identity")
	}
	if fj.Kinds == "" {
		return nil, errors.New("no kinds")
	}
	var err error
	if f.Kinds, err = collector.ParseKinds(strings.Split(fj.Kinds, ",")); err != nil {
		return nil, err
	}
	procs := make([]*enricher.Process, len(fj.Procs))
	for i, p := range fj.Procs {
		if p.Pid <= 0 || p.Ppid < 0 {
			return nil, fmt.Errorf("procs[%d]: bad pid %d or ppid %d", i, p.Pid, p.Ppid)
		}
		if !writable(p.CreateTime) {
			return nil, fmt.Errorf("procs[%d]: create_time %v out of range", i, p.CreateTime)
		}
		procs[i] = &enricher.Process{Pid: p.Pid, Ppid: p.Ppid, Name: p.Name, Exe: p.Exe,
			CommandLine: p.CmdLine, Username: p.Username, UID: p.UID,
			CreateTime: p.CreateTime.UTC(), StartTicks: p.StartTicks}
	}
	ids := make(map[uint64]bool, len(fj.Conns))
	f.Conns = make([]tracker.Saved, 0, len(fj.Conns))
	for i := range fj.Conns {
		c, err := connFromJSON(&fj.Conns[i], procs)
		if err != nil {
			return nil, fmt.Errorf("conns[%d]: %w", i, err)
		}
		if c.ID != 0 {
			if ids[c.ID] {
				return nil, fmt.Errorf("conns[%d]: id %d twice", i, c.ID)
			}
			if c.ID > f.NextID {
				return nil, fmt.Errorf("conns[%d]: id %d above next_id %d", i, c.ID, f.NextID)
			}
			ids[c.ID] = true
		}
		f.Conns = append(f.Conns, c)
	}
	return f, nil
}

func connFromJSON(cj *connJSON, procs []*enricher.Process) (tracker.Saved, error) {
	var c tracker.Saved
	kind, err := collector.ParseKinds([]string{cj.Kind})
	if err != nil || cj.Kind == "" {
		return c, fmt.Errorf("kind %q", cj.Kind)
	}
	s := &c.Socket
	switch kind {
	case collector.TCP4:
		s.Family, s.Type = collector.AF_INET, collector.SOCK_STREAM
	case collector.TCP6:
		s.Family, s.Type = collector.AF_INET6, collector.SOCK_STREAM
	case collector.UDP4:
		s.Family, s.Type = collector.AF_INET, collector.SOCK_DGRAM
	default:
		s.Family, s.Type = collector.AF_INET6, collector.SOCK_DGRAM
	}
	if s.Local, err = parseAddrPort(cj.Local); err != nil {
		return c, fmt.Errorf("local: %w", err)
	}
	if s.Remote, err = parseAddrPort(cj.Remote); err != nil {
		return c, fmt.Errorf("remote: %w", err)
	}
	if cj.State > uint8(collector.StateNewSynRecv) {
		return c, fmt.Errorf("state %d", cj.State)
	}
	s.State = collector.State(cj.State)
	s.Cookie, s.Inode, s.UID, s.Orphan = cj.Cookie, cj.Inode, cj.UID, cj.Orphan
	c.Netns = cj.Netns
	switch d := tracker.Direction(cj.Direction); d {
	case tracker.Outbound, tracker.Inbound, tracker.Listen, tracker.Unknown:
		c.Direction = d
	default:
		return c, fmt.Errorf("direction %q", cj.Direction)
	}
	if cj.Pid < -1 {
		return c, fmt.Errorf("pid %d", cj.Pid)
	}
	if cj.FirstSeen.IsZero() {
		return c, errors.New("no first_seen")
	}
	if !writable(cj.FirstSeen) {
		return c, fmt.Errorf("first_seen %v out of range", cj.FirstSeen)
	}
	if cj.ID == 0 && !cj.Closed {
		return c, errors.New("open connection without id")
	}
	if cj.Proc < 0 || cj.Proc > len(procs) {
		return c, fmt.Errorf("proc %d of %d", cj.Proc, len(procs))
	}
	if cj.Proc > 0 {
		c.Info = procs[cj.Proc-1]
	}
	c.ID, c.Pid, c.FirstSeen, c.Closed = cj.ID, cj.Pid, cj.FirstSeen.UTC(), cj.Closed
	s.Pid = c.Pid
	if c.Closed {
		s.Pid = -1
	}
	return c, nil
}

// An address is kept as the collector gave it (an IPv6 socket may hold an
// IPv4 address, a link-local one a zone); "" is no address at all.
func addrPortString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func parseAddrPort(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, nil
	}
	return netip.ParseAddrPort(s)
}

// Load reads and parses the state file at path. A missing file is an error
// satisfying errors.Is(err, fs.ErrNotExist).
func Load(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	// One allocation of the file's size (ReadAll would grow by doubling).
	size := 512
	if st, err := fh.Stat(); err == nil && st.Size() < MaxSize {
		size = int(st.Size()) + 1
	}
	b, err := readAll(io.LimitReader(fh, MaxSize+1), size)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxSize)
	}
	return parse(b)
}

func readAll(r io.Reader, size int) ([]byte, error) {
	b := make([]byte, 0, size)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}
