package tracker

// index finds connections by key. Kernel identities get maps of their own:
// at thousands of sockets per tick, hashing a uint64 rather than the whole
// key struct (two netip.AddrPort included) is most of the tracker's cost.
type index struct {
	cookies map[uint64]*Conn
	inodes  map[uint64]*Conn
	tuples  map[key]*Conn
}

func newIndex() index {
	return index{
		cookies: make(map[uint64]*Conn),
		inodes:  make(map[uint64]*Conn),
		tuples:  make(map[key]*Conn),
	}
}

func (ix *index) get(k key) (*Conn, bool) {
	var c *Conn
	var ok bool
	switch k.kind {
	case byCookie:
		c, ok = ix.cookies[k.id]
	case byInode:
		c, ok = ix.inodes[k.id]
	default:
		c, ok = ix.tuples[k]
	}
	return c, ok
}

func (ix *index) put(k key, c *Conn) {
	switch k.kind {
	case byCookie:
		ix.cookies[k.id] = c
	case byInode:
		ix.inodes[k.id] = c
	default:
		ix.tuples[k] = c
	}
}

func (ix *index) del(k key) {
	switch k.kind {
	case byCookie:
		delete(ix.cookies, k.id)
	case byInode:
		delete(ix.inodes, k.id)
	default:
		delete(ix.tuples, k)
	}
}

func (ix *index) len() int { return len(ix.cookies) + len(ix.inodes) + len(ix.tuples) }

// each calls f for every connection; f may delete the one it is given.
func (ix *index) each(f func(*Conn)) {
	for _, c := range ix.cookies {
		f(c)
	}
	for _, c := range ix.inodes {
		f(c)
	}
	for _, c := range ix.tuples {
		f(c)
	}
}
