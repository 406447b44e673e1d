package tracker

import (
	"slices"
	"time"

	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/enricher"
)

// SockEvent is a TCP socket's state change as the kernel reported it
// (package kevents): the socket and, when the change was made by a syscall
// of the process holding it, that process.
type SockEvent struct {
	Socket collector.Socket // Cookie set; State the new state; Pid -1 unless Owner
	Old    collector.State
	Netns  uint32
	// Owner: the event ran in the owner's own syscall (connect, listen,
	// accept, close), so Socket.Pid and Info are the owner. A change driven
	// by a packet runs on whatever task the CPU ran and names nobody.
	Owner bool
	// Accepted: from accept(), in the accepting process.
	Accepted bool
	Info     *enricher.Process
	// Time is when the kernel made the change (zero: when applied).
	Time time.Time
}

// Apply merges kernel events into the connections the snapshots also
// feed, and returns the rows they make (in the order of the events), valid
// until the next call (see Event.Conn).
//
// A connection is keyed by its socket cookie, the one netlink also
// reports, so a snapshot and an event about the same socket meet. It is
// reported Added once its owner is known from its own syscall and its
// tuple is complete (connect() runs before the local port is chosen), or
// when it ends, or after Options.EventHold; Removed when its owner closes
// it or the socket is gone, whichever comes first.
func (t *Tracker) Apply(now time.Time, evs []SockEvent) []Event {
	t.events = t.events[:0]
	for i := range evs {
		t.apply(now, &evs[i])
		if at := evs[i].Time; at.After(t.evClock) {
			t.evClock = at
		}
	}
	// The hold runs on the kernel's clock: a watcher that lags behind
	// its events (a burst, a slow snapshot) must not give up on an owner
	// whose accept() is the next record in the queue.
	clock := now
	if !t.evClock.IsZero() {
		clock = t.evClock
	}
	t.flushHeld(clock)
	return t.events
}

// Flush reports the connections held for their owner longer than
// Options.EventHold; call it when no events came for a while (not while
// events are queued: they may hold the owner).
func (t *Tracker) Flush(now time.Time) []Event {
	t.events = t.events[:0]
	t.flushHeld(now)
	return t.events
}

func (t *Tracker) apply(applied time.Time, ev *SockEvent) {
	now := ev.Time
	if now.IsZero() {
		now = applied
	}
	s := &ev.Socket
	if s.Cookie == 0 {
		// An accept of a socket whose state records were all dropped (the
		// cookie is given at the first one): the reconciling snapshot
		// finds it and its owner.
		return
	}
	k := key{kind: byCookie, id: s.Cookie}
	c, ok := t.conns.get(k)
	if ok && c.awaiting {
		// A snapshot saw its remnant first; its events tell its life.
		*c = Conn{ID: c.ID, key: store(k), Socket: *s, Pid: -1, FirstSeen: now,
			Netns: ev.Netns, Direction: eventDirection(t, ev), seen: c.seen}
		t.held = append(t.held, c)
	}
	end := s.State == collector.StateClose
	if !ok {
		if end || t.ended[s.Cookie] != (time.Time{}) {
			// The end of a socket never seen open (opened before start
			// and not in the baseline, or its records dropped): its tuple
			// is gone with it; a TIME_WAIT remnant will show in snapshots.
			return
		}
		t.nextID++
		c = &Conn{ID: t.nextID, key: store(k), Socket: *s, Pid: -1, FirstSeen: now,
			Netns: ev.Netns, Direction: eventDirection(t, ev)}
		t.conns.put(k, c)
		t.held = append(t.held, c)
	}
	c.evAt = applied.UnixNano()
	c.Netns = ev.Netns
	if s.Local.Port() != 0 {
		// The tuple is complete from the first record after connect()
		// on, and empty again once the socket is unhashed at its end.
		c.Socket.Local, c.Socket.Remote = s.Local, s.Remote
	}
	c.Socket.State = s.State
	if ev.Accepted && c.Direction != Inbound && !c.reported {
		c.Direction = Inbound
	}
	if ev.Owner && !c.reported {
		c.Pid, c.Info = s.Pid, ev.Info
		c.Socket.UID = s.UID
	}

	closedByOwner := ev.Owner && (s.State == collector.StateFinWait1 || s.State == collector.StateLastAck)
	if !c.reported {
		switch {
		case end || closedByOwner:
			t.add(now, c)
			if !c.closed {
				t.remove(now, c)
			}
		case c.Pid >= 0 && c.Socket.Local.Port() != 0:
			t.add(now, c)
		}
	} else if !c.closed && (end || closedByOwner) {
		t.remove(now, c)
	}
	if end {
		// The socket is freed; a TIME_WAIT remnant keeps its cookie. The
		// connection stays, closed, until a snapshot of its namespace
		// finds that remnant (which it then is) or not: until then a
		// saved state still holds it, and a restart does not take its
		// remnant for a new connection.
		c.closed = true
		t.ended[s.Cookie] = applied
	}
}

// flushHeld reports the connections whose owner did not show within
// EventHold (a socket never accepted, a connect() still waiting for its
// peer) with what is known.
func (t *Tracker) flushHeld(now time.Time) {
	n := 0
	for _, c := range t.held {
		if c.reported {
			continue
		}
		if now.Sub(c.FirstSeen) >= t.opts.EventHold {
			t.add(now, c)
			continue
		}
		t.held[n] = c
		n++
	}
	clear(t.held[n:])
	t.held = t.held[:n]
}

// eventDirection says who opened a connection from its first record.
func eventDirection(t *Tracker, ev *SockEvent) Direction {
	switch {
	case ev.Accepted:
		return Inbound
	case ev.Socket.State == collector.StateListen:
		return Listen
	case ev.Old == collector.StateClose && ev.Socket.State == collector.StateSynSent:
		return Outbound
	case ev.Old == collector.StateListen:
		// The child of a listener, created by the handshake.
		return Inbound
	}
	return t.direction(&ev.Socket)
}

// ownNetns: Update's snapshots see the watcher's network namespace; a
// connection in another one is judged by its events and UpdateNetns.
func (t *Tracker) ownNetns(c *Conn) bool {
	return c.Netns == 0 || c.Netns == t.opts.Netns
}

// OtherNetns lists the network namespaces other than the watcher's that
// connections (open, or closed with a remnant to come) are known in, in
// ascending order.
func (t *Tracker) OtherNetns() []uint32 {
	seen := map[uint32]bool{}
	var out []uint32
	t.conns.each(func(c *Conn) {
		if !t.ownNetns(c) && !seen[c.Netns] {
			seen[c.Netns] = true
			out = append(out, c.Netns)
		}
	})
	slices.Sort(out)
	return out
}

// inSnapshot: c is in the namespace a snapshot covers (0: the watcher's).
func (t *Tracker) inSnapshot(c *Conn, netns uint32) bool {
	if netns == 0 {
		return t.ownNetns(c)
	}
	return c.Netns == netns
}

// expireEnded forgets the cookies of sockets ended long enough ago that
// their TIME_WAIT remnant has expired too.
func (t *Tracker) expireEnded(now time.Time) {
	for cookie, at := range t.ended {
		if now.Sub(at) > remnantLife {
			delete(t.ended, cookie)
		}
	}
}

// remnantLife bounds how long a TIME_WAIT remnant lives (Linux: 60 s),
// with a margin for a slow reconciling snapshot.
const remnantLife = 2 * time.Minute
