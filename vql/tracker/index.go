package tracker

import "github.com/netwatch-dfir/netwatch/vql/collector"

// index finds connections by key. Kernel identities get maps of their own:
// at thousands of sockets per tick, hashing a uint64 rather than the whole
// key struct (two netip.AddrPort included) is most of the tracker's cost.
// TCP and UDP are apart, so that a snapshot of the UDP tables (every
// period, with kernel events) does not walk tens of thousands of TCP
// connections and their TIME_WAIT remnants.
type index struct {
	ids    [2]idMaps // [0] TCP, [1] UDP
	tuples map[key]*Conn
}

type idMaps struct {
	cookies map[uint64]*Conn
	inodes  map[uint64]*Conn
}

func newIndex() index {
	ix := index{tuples: make(map[key]*Conn)}
	for i := range ix.ids {
		ix.ids[i] = idMaps{cookies: make(map[uint64]*Conn), inodes: make(map[uint64]*Conn)}
	}
	return ix
}

func (ix *index) maps(k key) map[uint64]*Conn {
	m := &ix.ids[0]
	if k.dgram {
		m = &ix.ids[1]
	}
	switch k.kind {
	case byCookie:
		return m.cookies
	case byInode:
		return m.inodes
	}
	return nil
}

func (ix *index) get(k key) (*Conn, bool) {
	if m := ix.maps(k); m != nil {
		c, ok := m[k.id]
		return c, ok
	}
	c, ok := ix.tuples[k]
	return c, ok
}

func (ix *index) put(k key, c *Conn) {
	if m := ix.maps(k); m != nil {
		m[k.id] = c
		return
	}
	ix.tuples[k] = c
}

func (ix *index) del(k key) {
	if m := ix.maps(k); m != nil {
		delete(m, k.id)
		return
	}
	delete(ix.tuples, k)
}

func (ix *index) len() int {
	n := len(ix.tuples)
	for _, m := range ix.ids {
		n += len(m.cookies) + len(m.inodes)
	}
	return n
}

// each calls f for every connection; f may delete the one it is given.
func (ix *index) each(f func(*Conn)) { ix.eachKind(collector.AllKinds, f) }

// eachKind is each over the connections that may be of kinds (and every
// tuple-keyed one, which are few: only OSes without kernel identities).
func (ix *index) eachKind(kinds collector.Kind, f func(*Conn)) {
	for i, m := range ix.ids {
		want := collector.TCP4 | collector.TCP6
		if i == 1 {
			want = collector.UDP4 | collector.UDP6
		}
		if kinds&want == 0 {
			continue
		}
		for _, c := range m.cookies {
			f(c)
		}
		for _, c := range m.inodes {
			f(c)
		}
	}
	for _, c := range ix.tuples {
		f(c)
	}
}
