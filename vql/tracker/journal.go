package tracker

import (
	"sort"
	"time"
)

// The journal is what the tracker knows of its rows' fate once the caller
// has them: handed on at some time (Delivered), or never (Undelivered). A
// row handed on is not yet safe: Velociraptor batches a client's rows and
// its unsent batch dies with the process. Save therefore writes a state in
// which the rows not yet safe did not happen, so that a tracker resumed from
// it (after a crash) reports them again, Offline, rather than never.
//
// The journal lives here, not with the caller, because it holds
// connections: an Event's Conn is the tracker's, and the caller keeps
// nothing of it past the next call.

// handed is one row of the journal.
type handed struct {
	at   time.Time // when it was handed on; zero: never
	diff Diff
	c    *Conn
}

type journal struct {
	sent    []handed // Delivered, oldest first; forgotten once safe
	refused []handed // Undelivered: never safe
}

// Delivered notes that the rows of evs were handed on at now. Save counts
// them as not reported until SaveOptions.Lag has passed since. A row the
// caller neither delivers nor refuses (it filtered the event out) counts as
// reported at once: it would be filtered out again.
func (t *Tracker) Delivered(now time.Time, evs ...Event) {
	for i := range evs {
		t.journal.sent = append(t.journal.sent, handed{now, evs[i].Diff, evs[i].Conn})
	}
}

// Undelivered notes that the rows of evs were never handed on (the output
// was closed): Save counts them as not reported for the tracker's life.
func (t *Tracker) Undelivered(evs ...Event) {
	for i := range evs {
		t.journal.refused = append(t.journal.refused, handed{diff: evs[i].Diff, c: evs[i].Conn})
	}
}

// SaveOptions say what a saved state trusts.
type SaveOptions struct {
	// Lag is how long a row handed on (Delivered) is not trusted to have
	// reached its destination. Zero trusts it at once.
	Lag time.Duration
	// MaxRemnants bounds the closed connections saved (only kept so that
	// their TIME_WAIT remnants are not reported as new after a restart):
	// beyond it the oldest are left out. Zero: no bound.
	MaxRemnants int
}

// Save returns the state to resume from (Resume) after a restart at now:
// every connection reported so far that is still in the table (the
// baseline included; not a socket still held for its owner), in order of
// ID, as if the rows not yet safe had not happened: a connection whose
// Added is not safe is left out (the next run reports it), one whose
// Removed is not is saved open (the next run reports its end). The journal
// forgets the rows that have become safe.
func (t *Tracker) Save(now time.Time, opts SaveOptions) []Saved {
	drop, reopen := t.journal.unsafe(now, opts.Lag)
	var out []Saved
	t.conns.each(func(c *Conn) {
		if !c.reported || drop[c.ID] {
			return
		}
		s := t.savedOf(c)
		if _, ok := reopen[c.ID]; ok {
			s.Closed = false
			delete(reopen, c.ID)
		}
		out = append(out, s)
	})
	// Removed rows not safe of connections no longer in the table.
	for id, c := range reopen {
		if drop[id] {
			continue
		}
		s := t.savedOf(c)
		s.Closed = false
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return capRemnants(out, opts.MaxRemnants)
}

func (t *Tracker) savedOf(c *Conn) Saved {
	s := Saved{ID: c.ID, Socket: c.Socket, Pid: c.Pid, Direction: c.Direction,
		FirstSeen: c.FirstSeen, Closed: c.closed, Info: c.Info}
	if !t.ownNetns(c) {
		s.Netns = c.Netns
	}
	return s
}

// unsafe forgets the rows delivered lag or longer before now and returns
// the connections of the others: those whose Added is not safe, and those
// whose Removed is not.
func (j *journal) unsafe(now time.Time, lag time.Duration) (drop map[uint64]bool, reopen map[uint64]*Conn) {
	n := 0
	for n < len(j.sent) && now.Sub(j.sent[n].at) >= lag {
		n++
	}
	m := copy(j.sent, j.sent[n:])
	clear(j.sent[m:]) // let the connections go
	j.sent = j.sent[:m]
	drop = make(map[uint64]bool)
	reopen = make(map[uint64]*Conn)
	for _, rows := range [][]handed{j.refused, j.sent} {
		for _, h := range rows {
			switch h.diff {
			case Added:
				drop[h.c.ID] = true
			case Removed:
				reopen[h.c.ID] = h.c
			}
		}
	}
	return drop, reopen
}

// capRemnants keeps every open connection and the newest max closed ones
// of saved, which is in ID order (the oldest first).
func capRemnants(saved []Saved, max int) []Saved {
	closed := 0
	for i := range saved {
		if saved[i].Closed {
			closed++
		}
	}
	if max <= 0 || closed <= max {
		return saved
	}
	skip := closed - max
	out := saved[:0]
	for _, s := range saved {
		if s.Closed && skip > 0 {
			skip--
			continue
		}
		out = append(out, s)
	}
	return out
}
