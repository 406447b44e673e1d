package tracker

import (
	"time"

	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/enricher"
)

// Saved is a connection as a state file keeps it across a restart of the
// watcher: what recognises its socket again, and what its removed row says.
type Saved struct {
	ID        uint64
	Socket    collector.Socket // as last seen: addresses, state and kernel identity
	Pid       int32            // owner when reported Added
	Direction Direction
	FirstSeen time.Time
	// Closed: its end was reported, or it was first seen closed. Such an
	// entry is kept only while its remnant (TIME_WAIT) is in the table, so
	// that the remnant is not reported as a new connection after a restart.
	Closed bool
	Info   *enricher.Process
	// Netns is the inode of another network namespace the connection is
	// in (known from kernel events or its snapshots); 0: the watcher's.
	Netns uint32
}

// NextID is the ID the next new connection will follow: saved with the
// connections, so that ConnId stays unique across restarts.
func (t *Tracker) NextID() uint64 { return t.nextID }

// RestoreOptions say how to read the saved connections.
type RestoreOptions struct {
	// NextID continues the saved ID sequence (Tracker.NextID).
	NextID uint64
	// Covered tells whether the earlier tracker watched sockets like this
	// one (it read the same socket tables); nil covers everything.
	Covered func(*collector.Socket) bool
	// OtherBoot: the state was saved before the host rebooted. Cookies,
	// inodes and PIDs start over with a boot, so no socket is matched: every
	// saved open connection ended with the reboot.
	OtherBoot bool
}

// Resume is a restarted tracker's first step, in place of its first
// Update: it takes the connections an earlier tracker saved (Save) and the
// first snapshot, and matches them:
//
//   - a saved connection whose socket is there is not reported again (and is
//     reported Removed, Offline, if the socket is now closed);
//   - a saved open connection with no socket is reported Removed, Offline:
//     it ended while nobody watched; Duration runs from its saved FirstSeen;
//   - a socket that matches nothing is reported Added, Offline: it appeared
//     while nobody watched. Unless Covered says the earlier tracker did not
//     watch sockets like it: then it is baseline, as on a first run.
//
// A socket is matched as Rebase matches: by cookie where both sides have
// one, else by inode (and tuple) where both have one, else by tuple (and
// owner, for open sockets). So a state saved while reading netlink
// (cookies) is understood while reading /proc/net (inodes only) and the
// other way round. An open entry without ID, or with an ID seen before, is
// skipped. Later snapshots go to Update.
func (t *Tracker) Resume(now time.Time, socks []collector.Socket, saved []Saved, opts RestoreOptions) []Event {
	t.started = true
	t.nextID = max(t.nextID, opts.NextID)
	ids := make(map[uint64]bool, len(saved))
	var restored []*Conn
	for i := range saved {
		sv := &saved[i]
		if sv.ID != 0 && ids[sv.ID] || sv.ID == 0 && !sv.Closed || opts.OtherBoot && sv.Closed {
			continue
		}
		ids[sv.ID] = true
		t.nextID = max(t.nextID, sv.ID)
		c := &Conn{ID: sv.ID, Socket: sv.Socket, Pid: sv.Pid,
			Direction: sv.Direction, FirstSeen: sv.FirstSeen,
			Info: sv.Info, reported: true, closed: sv.Closed, offline: true}
		if sv.Netns != 0 && !opts.OtherBoot && sv.Socket.Cookie != 0 {
			// In another namespace: not in this snapshot, but in the first
			// one of its own namespace (UpdateNetns), which finds it by
			// its cookie, or finds it gone.
			if !sv.Closed {
				k := keyOf(&sv.Socket)
				c.Netns, c.key = sv.Netns, store(k)
				t.conns.put(k, c)
			}
			continue
		}
		// (After a reboot namespaces are new too: what was open in one
		// ended, as everything else did, and this snapshot says so.)
		restored = append(restored, c)
	}
	if !opts.OtherBoot {
		t.placeRestored(socks, restored)
	} else {
		t.placeRestored(nil, restored)
	}
	covered := opts.Covered
	if covered == nil {
		covered = func(*collector.Socket) bool { return true }
	}
	return t.update(now, socks, collector.AllKinds, covered, 0, false)
}

// placeRestored puts the restored connections in the index: under the key of
// the socket each one matches in this snapshot, or, when none matches and it
// is open, under a key no socket has (so Update finds it gone). A closed one
// that matches nothing is forgotten: its remnant has expired.
func (t *Tracker) placeRestored(socks []collector.Socket, restored []*Conn) {
	byCookie := make(map[uint64]*Conn)
	byInode := make(map[uint64]*Conn)
	byTup := make(map[tuple][]*Conn)
	for _, c := range restored {
		s := &c.Socket
		if s.Cookie != 0 {
			byCookie[s.Cookie] = c
		}
		if s.Inode != 0 {
			byInode[s.Inode] = c
		}
		tp := tupleOf(s)
		byTup[tp] = append(byTup[tp], c)
	}
	matched := make(map[*Conn]bool)
	for i := range socks {
		s := &socks[i]
		c := matchRestored(s, byCookie, byInode, byTup, matched)
		if c == nil {
			continue
		}
		k := keyOf(s)
		if _, dup := t.conns.get(k); dup {
			// The same identity twice in one snapshot: Update keeps the first.
			continue
		}
		matched[c] = true
		c.key = store(k)
		t.conns.put(k, c)
	}
	for _, c := range restored {
		if matched[c] || c.closed {
			continue
		}
		k := key{kind: byRestored, id: c.ID}
		c.key = store(k)
		t.conns.put(k, c)
	}
}

// matchRestored finds the restored connection a socket is, if any. A kernel
// identity both sides have decides alone: equal cookies are the same socket,
// different ones are not (cookies and inodes are unique within a boot).
func matchRestored(s *collector.Socket, byCookie, byInode map[uint64]*Conn,
	byTup map[tuple][]*Conn, matched map[*Conn]bool) *Conn {
	tp := tupleOf(s)
	if s.Cookie != 0 {
		if c, ok := byCookie[s.Cookie]; ok && !matched[c] {
			return c
		}
	}
	if s.Inode != 0 {
		if c, ok := byInode[s.Inode]; ok && !matched[c] && tupleOf(&c.Socket) == tp &&
			(c.Socket.Cookie == 0 || s.Cookie == 0) {
			return c
		}
	}
	for _, c := range byTup[tp] {
		cs := &c.Socket
		switch {
		case matched[c]:
		case cs.Cookie != 0 && s.Cookie != 0, cs.Inode != 0 && s.Inode != 0:
			// Decided above: another socket.
		case c.closed && !s.Closed():
			// A new socket on the tuple of an old one's remnant.
		case !s.Closed() && !c.closed && c.Pid >= 0 && s.Pid >= 0 && c.Pid != s.Pid:
			// Tuple-keyed OS: the owner is part of the identity.
		default:
			return c
		}
	}
	return nil
}
