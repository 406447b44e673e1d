// Package tracker turns successive socket table snapshots into connection
// lifecycle events: exactly one Added and at most one Removed per connection.
//
// Stock diff(netstat()) keys rows on a formatted string that includes the
// PID, so a TCP socket that moves from ESTAB (owned) to TIME_WAIT (orphaned,
// PID -1) looks like one row removed and another added: every short
// connection alerts twice. Here a connection is one kernel socket, identified
// by what the OS gives (netlink cookie, else inode, else the tuple plus
// owner), and the rules of docs/ARCHITECTURE.md ("What is one connection")
// apply:
//
//   - a connection ends (Removed, with its duration) when its owner closes it
//     (TIME_WAIT, CLOSE or orphaned) or when it disappears;
//   - the orphaned remnant of a connection already reported is not new;
//   - a socket first seen already closed (it opened and closed between two
//     ticks) is reported once, as Added with Pid -1;
//   - a new socket that reuses an old tuple is a new connection.
//
// The caller reads each Event before its next call and keeps nothing of it;
// it tells the tracker which rows it delivered, and when, or could not
// deliver, and Save writes the state for a restart with the rows not yet
// safe undone (journal.go).
package tracker

import (
	"net/netip"
	"sort"
	"time"

	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/enricher"
)

// Diff says what happened to a connection.
type Diff uint8

const (
	Added Diff = iota + 1
	Removed
)

func (d Diff) String() string {
	switch d {
	case Added:
		return "added"
	case Removed:
		return "removed"
	}
	return "unknown"
}

// Direction is who initiated a connection, as far as the socket table tells.
type Direction string

const (
	Outbound Direction = "outbound"
	Inbound  Direction = "inbound"
	Listen   Direction = "listen"
	Unknown  Direction = "unknown"
)

// Conn is one tracked connection.
type Conn struct {
	ID        uint64           // unique for the tracker's life, in order of first sight
	Socket    collector.Socket // as last seen
	Pid       int32            // owner when reported Added; kept for Removed
	Direction Direction
	FirstSeen time.Time

	// Netns is the inode of the socket's network namespace, from kernel
	// events; 0 for a socket only snapshots have seen (the watcher's own).
	Netns uint32

	// Info is the process details resolved at Added (by the caller, or
	// from a kernel event), kept so that Removed carries the same ones.
	Info *enricher.Process

	// A busy server holds tens of thousands of these for hours: the
	// fields below are kept small (the key without its tuple, times in
	// nanoseconds), 224 bytes a connection rather than 352.
	key  storedKey
	seen uint64 // generation of the last snapshot that had it
	// evAt is when the last kernel event about it was applied (Unix ns, 0
	// for none): a snapshot taken before then says nothing about whether
	// it is gone.
	evAt     int64
	held     uint8 // ticks waited for an owner
	reported bool  // Added was emitted (or it was part of the baseline)
	closed   bool  // Removed was emitted, or it was first seen closed
	offline  bool  // its change happened while no tracker watched (Restore)
	existing bool  // in the first snapshot of a tracker with EmitExisting
	awaiting bool  // a remnant a snapshot found before any event about it
}

// Event is one row of output.
type Event struct {
	Diff Diff
	Time time.Time
	// Conn is the tracker's own, and its later calls change it: read it
	// (and, at Added, set its Info) before the next call, and keep
	// nothing of it, the Event included, past that. What became of the
	// row is told back with Delivered or Undelivered.
	Conn *Conn
	// State is the socket's state when the change was seen: a batch of
	// kernel events can take a connection from SYN_SENT to CLOSE, and its
	// added row must say ESTAB.
	State collector.State
	// Removed only: from the tick that first saw it to the tick that saw
	// it end, so the true lifetime is within one period of it.
	Duration time.Duration
	// Offline: the change happened while no tracker was watching, and was
	// found by the first snapshot after Restore: the connection opened (or
	// ended) at some time before Time, not within a period of it. Duration
	// is then an upper bound.
	Offline bool
	// Existing: an Added of a socket that was already there at the first
	// snapshot of a tracker with EmitExisting that resumed nothing: found
	// open, not seen opening (FirstSeen is the start of watching).
	Existing bool
}

// Options tune a Tracker. The zero value is usable.
type Options struct {
	// EmitExisting reports the sockets of the first snapshot as Added.
	// Otherwise the first snapshot is the baseline, as with diff().
	EmitExisting bool
	// HoldTicks is how many extra snapshots a socket that has an inode but
	// no known owner yet waits before being reported with Pid -1. An
	// accepted socket is in the table before accept() gives it an fd.
	HoldTicks int
	// RemnantTicks is how long the tuple of a connection that disappeared
	// is remembered, so that an orphaned remnant seen late (a non-atomic
	// /proc read, a tuple-keyed OS) is not reported as new.
	RemnantTicks int

	// EventHold is how long a connection first known from kernel events
	// waits for its owner's syscall (accept(), or connect()'s local port)
	// before being reported with what is known (default 2 s).
	EventHold time.Duration
	// Netns is the inode of the network namespace snapshots see; kernel
	// events report other namespaces too (see Apply).
	Netns uint32
	// Events: kernel events (Apply) feed the tracker besides snapshots, so
	// a snapshot's half-open sockets are left to them: a request socket
	// (SYN_RECV) has an identity of its own, not the accepted socket's.
	Events bool
}

// Tracker diffs snapshots. It is not safe for concurrent use.
type Tracker struct {
	opts    Options
	conns   index
	gone    map[tuple]uint64 // tuple of a connection that disappeared -> expiry generation
	gen     uint64
	nextID  uint64
	started bool

	// resuming: within Resume only (its Added rows are Offline).
	resuming bool
	resumed  bool // Resume was the first step

	listeners map[listenKey][]netip.Addr // rebuilt each snapshot
	events    []Event

	held    []*Conn              // known from events, not reported yet
	ended   map[uint64]time.Time // cookie of a socket whose end an event reported -> when
	evClock time.Time            // the latest event's time

	journal journal // rows handed on but not yet safe (Save)
}

// New returns an empty Tracker.
func New(opts Options) *Tracker {
	if opts.RemnantTicks <= 0 {
		opts.RemnantTicks = 2
	}
	if opts.EventHold <= 0 {
		opts.EventHold = 2 * time.Second
	}
	return &Tracker{
		opts:      opts,
		conns:     newIndex(),
		gone:      make(map[tuple]uint64),
		listeners: make(map[listenKey][]netip.Addr),
		ended:     make(map[uint64]time.Time),
	}
}

type keyKind uint8

const (
	byCookie keyKind = iota + 1
	byInode
	byTuple
	byRestored // a restored connection not (yet) matched to a socket; id is its ID
)

// tuple is what identifies a connection on the wire.
type tuple struct {
	typ           uint8
	local, remote netip.AddrPort
}

type key struct {
	kind  keyKind
	dgram bool   // UDP: the index keeps the two protocols apart
	id    uint64 // cookie or inode
	t     tuple  // byTuple only
	pid   int32  // byTuple only: the owner is part of the identity there
}

// storedKey is a key as a Conn keeps it: the tuple, 72 of the key's 96
// bytes, only for the few connections keyed by it (OSes without kernel
// identities).
type storedKey struct {
	kind  keyKind
	dgram bool
	pid   int32
	id    uint64
	t     *tuple
}

func store(k key) storedKey {
	sk := storedKey{kind: k.kind, dgram: k.dgram, pid: k.pid, id: k.id}
	if k.kind == byTuple {
		t := k.t
		sk.t = &t
	}
	return sk
}

func (sk storedKey) key() key {
	k := key{kind: sk.kind, dgram: sk.dgram, pid: sk.pid, id: sk.id}
	if sk.t != nil {
		k.t = *sk.t
	}
	return k
}

func tupleOf(s *collector.Socket) tuple {
	return tuple{typ: s.Type, local: s.Local, remote: s.Remote}
}

func keyOf(s *collector.Socket) key {
	switch {
	case s.Cookie != 0:
		return key{kind: byCookie, id: s.Cookie, dgram: !s.IsTCP()}
	case s.Inode != 0:
		return key{kind: byInode, id: s.Inode, dgram: !s.IsTCP()}
	}
	k := key{kind: byTuple, t: tupleOf(s)}
	if !s.Closed() {
		k.pid = s.Pid
	}
	return k
}

type listenKey struct {
	typ  uint8
	port uint16
}

// Update diffs a complete snapshot taken at now against the previous one and
// returns the events in order of first sight, valid until the next call
// (see Event.Conn).
func (t *Tracker) Update(now time.Time, socks []collector.Socket) []Event {
	return t.UpdateKinds(now, socks, collector.AllKinds)
}

// UpdateKinds is Update with a snapshot of some socket tables only: the
// connections of the others are not judged by it. (With kernel events for
// TCP, the UDP tables are polled often and the TCP ones seldom.)
func (t *Tracker) UpdateKinds(now time.Time, socks []collector.Socket, kinds collector.Kind) []Event {
	return t.update(now, socks, kinds, nil, 0, false)
}

// UpdateNetns diffs a snapshot of another network namespace (netns is its
// inode), taken with kinds, against the connections known there from
// kernel events and its earlier snapshots; nothing elsewhere is judged by
// it. first: the namespace is in the watcher's first round of snapshots,
// so what is open there is a baseline, as in the tracker's own first
// snapshot (Existing with EmitExisting), or, in a tracker that resumed a
// state, found while no tracker watched (Offline). A namespace that
// appears later (a container started since) is diffed like any later
// snapshot: kernel events have reported its connections, and what they
// missed is Added now.
func (t *Tracker) UpdateNetns(now time.Time, netns uint32, socks []collector.Socket, kinds collector.Kind, first bool) []Event {
	// Its listeners name directions in it only.
	own := t.listeners
	t.listeners = make(map[listenKey][]netip.Addr)
	defer func() { t.listeners = own }()
	return t.update(now, socks, kinds, nil, netns, first)
}

// update is Update, or Resume's first snapshot when covered is not nil
// (it says which sockets the earlier tracker watched), or UpdateNetns when
// netns is not 0.
func (t *Tracker) update(now time.Time, socks []collector.Socket, kinds collector.Kind,
	covered func(*collector.Socket) bool, netns uint32, first bool) []Event {
	t.gen++
	t.events = t.events[:0]
	var baseline, existing, offline bool
	if netns == 0 {
		baseline = !t.started && !t.opts.EmitExisting
		// Restore starts the tracker too: a resumed watch has no Existing.
		existing = !t.started && t.opts.EmitExisting
		t.started = true
	} else if first {
		baseline = !t.resumed && !t.opts.EmitExisting
		existing = !t.resumed && t.opts.EmitExisting
		offline = t.resumed
	}
	restoring := covered != nil
	t.resumed = t.resumed || restoring
	t.resuming = restoring
	t.indexListeners(socks, kinds)

	var fresh []int // sockets not tracked before
	for i := range socks {
		s := &socks[i]
		if t.opts.Events && (s.State == collector.StateSynRecv || s.State == collector.StateNewSynRecv) && s.IsTCP() {
			continue
		}
		c, ok := t.conns.get(keyOf(s))
		if !ok {
			fresh = append(fresh, i)
			continue
		}
		t.observe(now, c, s)
	}

	// Sockets first seen closed may be the remnant of a connection that
	// disappeared in this same snapshot under another key (a /proc inode
	// that became 0, a Windows PID that became 0).
	var missing map[tuple]*Conn
	t.conns.eachKind(kinds, func(c *Conn) {
		if c.seen != t.gen && !c.closed && t.inSnapshot(c, netns) && c.Socket.Kind()&kinds != 0 {
			if missing == nil {
				missing = make(map[tuple]*Conn)
			}
			missing[tupleOf(&c.Socket)] = c
		}
	})

	for _, i := range fresh {
		s := &socks[i]
		k := keyOf(s)
		if _, dup := t.conns.get(k); dup {
			// The same identity twice in one snapshot: keep the first.
			continue
		}
		tp := tupleOf(s)
		if c, ok := missing[tp]; ok && (s.Closed() || gainedInode(c, s)) {
			// The same socket under a new key: its remnant after close,
			// or (without cookies) an accepted socket that got its inode.
			delete(missing, tp)
			t.conns.del(c.key.key())
			c.key = store(k)
			t.conns.put(k, c)
			t.observe(now, c, s)
			continue
		}
		_, endedByEvent := t.ended[s.Cookie]
		if s.Closed() && s.Cookie != 0 && endedByEvent {
			// Remnant of a connection whose end an event reported.
			t.conns.put(k, &Conn{key: store(k), Socket: *s, seen: t.gen, reported: true, closed: true,
				FirstSeen: now, Pid: -1, Direction: t.direction(s)})
			continue
		}
		if s.Closed() {
			if exp, ok := t.gone[tp]; ok && exp >= t.gen {
				// Remnant of a connection already reported removed.
				t.conns.put(k, &Conn{key: store(k), Socket: *s, seen: t.gen, reported: true, closed: true,
					FirstSeen: now, Pid: -1, Direction: t.direction(s)})
				continue
			}
		}
		t.nextID++
		c := &Conn{ID: t.nextID, key: store(k), Socket: *s, Pid: s.Pid, FirstSeen: now,
			seen: t.gen, Direction: t.direction(s), offline: restoring || offline, existing: existing,
			Netns: netns}
		t.conns.put(k, c)
		if baseline || restoring && !covered(s) {
			c.reported = true
			c.closed = s.Closed()
			continue
		}
		if t.opts.Events && s.IsTCP() && s.Closed() && s.Cookie != 0 && !restoring && !offline {
			// A remnant no event has told of yet: a watcher behind a burst
			// has its events still queued, and they name the owner. It
			// waits for them, or for the next snapshot (then Pid -1: its
			// records were lost); gone by then, it is reported ended.
			c.awaiting = true
			continue
		}
		t.maybeAdd(now, c)
	}

	// What was not in the snapshot is gone.
	t.conns.eachKind(kinds, func(c *Conn) {
		if c.seen == t.gen || !t.inSnapshot(c, netns) || c.Socket.Kind()&kinds == 0 ||
			c.evAt != 0 && c.evAt >= now.UnixNano() {
			// Seen; or where this snapshot cannot see; or told about by
			// an event after the snapshot began.
			return
		}
		t.conns.del(c.key.key())
		if c.closed {
			return
		}
		if !c.reported {
			// Held for an owner that never showed: it still existed.
			t.add(now, c)
		}
		t.remove(now, c)
		t.gone[tupleOf(&c.Socket)] = t.gen + uint64(t.opts.RemnantTicks)
	})
	for tp, exp := range t.gone {
		if exp < t.gen {
			delete(t.gone, tp)
		}
	}
	t.expireEnded(now)
	if restoring || netns != 0 && first {
		// What happened offline has been reported; a socket still held for
		// its owner keeps the mark until its Added, and a connection of a
		// namespace not snapshotted yet until that namespace is.
		t.resuming = false
		t.conns.each(func(c *Conn) {
			if c.reported && t.inSnapshot(c, netns) {
				c.offline = false
			}
		})
	}

	// In order of first sight, so that the connection a reused tuple had
	// before ends before the new one starts, and a connection's added row
	// always precedes its removed row.
	sort.SliceStable(t.events, func(i, j int) bool {
		a, b := &t.events[i], &t.events[j]
		if a.Conn.ID != b.Conn.ID {
			return a.Conn.ID < b.Conn.ID
		}
		return a.Diff < b.Diff
	})
	return t.events
}

// gainedInode tells an accepted socket that /proc listed without an inode
// (still in the listener's queue) from a new socket: only the former had no
// kernel identity at all and now has one.
func gainedInode(c *Conn, s *collector.Socket) bool {
	return c.key.kind == byTuple && c.Socket.Inode == 0 && c.Socket.Cookie == 0 && s.Inode != 0
}

// observe updates a tracked connection with its socket in this snapshot.
func (t *Tracker) observe(now time.Time, c *Conn, s *collector.Socket) {
	c.seen = t.gen
	c.Socket = *s
	if !c.reported {
		if c.Pid < 0 && s.Pid >= 0 {
			c.Pid = s.Pid
		}
		t.maybeAdd(now, c)
	}
	// A reported connection whose socket is closed has been reported
	// removed (c.closed), except one restored from a state file that
	// was saved before its removed row could be delivered.
	if c.closed || !c.reported {
		return
	}
	if s.Closed() {
		t.remove(now, c)
	}
}

// maybeAdd reports a new connection unless it is still waiting for its owner.
func (t *Tracker) maybeAdd(now time.Time, c *Conn) {
	s := &c.Socket
	waiting := c.Pid < 0 && !s.Closed()
	if waiting && int(c.held) < t.opts.HoldTicks {
		c.held++
		return
	}
	t.add(now, c)
	if s.Closed() {
		// Opened and closed between two ticks, or closed while held: this
		// Added is all there will be for it.
		c.closed = true
		if c.held > 0 {
			t.remove(now, c)
		}
	}
}

func (t *Tracker) add(now time.Time, c *Conn) {
	c.reported = true
	t.events = append(t.events, Event{Diff: Added, Time: now, Conn: c, Offline: c.offline,
		Existing: c.existing, State: c.Socket.State})
	if !t.resuming {
		c.offline = false
	}
}

func (t *Tracker) remove(now time.Time, c *Conn) {
	c.closed = true
	t.events = append(t.events, Event{Diff: Removed, Time: now, Conn: c,
		Duration: now.Sub(c.FirstSeen), Offline: c.offline, State: c.Socket.State})
}

func (t *Tracker) indexListeners(socks []collector.Socket, kinds collector.Kind) {
	if kinds == collector.AllKinds {
		clear(t.listeners)
	}
	for lk := range t.listeners {
		if collector.KindOf(collector.AF_INET, lk.typ)&kinds != 0 || collector.KindOf(collector.AF_INET6, lk.typ)&kinds != 0 {
			delete(t.listeners, lk)
		}
	}
	for i := range socks {
		s := &socks[i]
		if s.Listening() {
			lk := listenKey{s.Type, s.Local.Port()}
			t.listeners[lk] = append(t.listeners[lk], s.Local.Addr())
		}
	}
}

// direction guesses who opened a connection: a socket whose local port is
// one a listener of the same protocol waits on was accepted.
func (t *Tracker) direction(s *collector.Socket) Direction {
	if s.Listening() {
		return Listen
	}
	if s.IsTCP() {
		switch s.State {
		case collector.StateSynSent:
			return Outbound
		case collector.StateSynRecv, collector.StateNewSynRecv:
			return Inbound
		}
	}
	for _, a := range t.listeners[listenKey{s.Type, s.Local.Port()}] {
		if a.IsUnspecified() || a == s.Local.Addr() {
			return Inbound
		}
	}
	if s.Closed() && s.Pid < 0 {
		// An orphan first seen closed: outbound if it talked to one of
		// our own listeners, otherwise either side may have opened it.
		for _, a := range t.listeners[listenKey{s.Type, s.Remote.Port()}] {
			if a == s.Remote.Addr() || a.IsUnspecified() && s.Remote.Addr().IsLoopback() {
				return Outbound
			}
		}
		return Unknown
	}
	return Outbound
}

// Rebase re-keys the tracked connections by the identities of a snapshot
// from another source (netlink gives cookies, /proc/net only inodes), so
// that switching collectors mid-stream reports nothing by itself. A
// connection is matched by inode, or by its tuple when it has none.
func (t *Tracker) Rebase(socks []collector.Socket) {
	byInode := make(map[uint64]*Conn)
	byTuple := make(map[tuple]*Conn)
	t.conns.each(func(c *Conn) {
		if c.Socket.Inode != 0 {
			byInode[c.Socket.Inode] = c
		} else {
			byTuple[tupleOf(&c.Socket)] = c
		}
	})
	for i := range socks {
		s := &socks[i]
		c, ok := byInode[s.Inode]
		if s.Inode == 0 || !ok {
			if c, ok = byTuple[tupleOf(s)]; !ok {
				continue
			}
		}
		t.conns.del(c.key.key())
		k := keyOf(s)
		c.key = store(k)
		t.conns.put(k, c)
	}
}
