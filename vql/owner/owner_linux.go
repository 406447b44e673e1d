//go:build linux

package owner

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/netwatch-dfir/netwatch/vql/collector"
)

const (
	// maxScans is how many scans look for an inode before it is given up
	// on. More than one because a socket accepted by the kernel is in the
	// table before accept() gives the process an fd for it.
	maxScans = 3

	// mruSize is how many recent owners are visited first: processes that
	// open one socket (servers accepting, clients polling) tend to open more.
	mruSize = 8
)

// fdLink is what an fd of a process pointed to at its last visit.
type fdLink struct {
	ino  uint64 // socket inode, 0 for anything else
	seen uint32 // the visit that saw it
}

// fdTable remembers the fds of one process between scans.
type fdTable struct {
	links  map[int32]fdLink
	visits uint32
}

type entry struct {
	pid   int32
	scans uint8  // scans that looked for the inode and missed
	gen   uint64 // last Resolve call that saw the inode
}

// Resolver maps socket inodes to the PIDs that hold them. It is not safe
// for concurrent use.
type Resolver struct {
	procRoot []byte // NUL-terminated
	cache    map[uint64]entry
	gen      uint64
	want     []uint64 // inodes the current scan looks for

	mru        []int32 // recent owners, most recent first
	pids, prev []int32 // /proc listing of this and the previous scan, ascending

	// The fds of the processes visited, so that a visit reads only the
	// links that may have changed: an fd still pointing to a live socket
	// is trusted (a process with 16,000 connections gets a new one: one
	// readlink, not 16,000). trust is off for a scan that looks for an
	// inode a trusting scan missed while it stayed live (see scan).
	fds   map[int32]*fdTable
	trust bool

	// Reused so that a scan allocates nothing.
	dents []byte
	link  []byte
	path  []byte

	stats Stats
}

// New returns a Resolver over procRoot, normally "/proc".
func New(procRoot string) *Resolver {
	return &Resolver{
		procRoot: append([]byte(procRoot), 0),
		cache:    make(map[uint64]entry),
		fds:      make(map[int32]*fdTable),
		mru:      make([]int32, 0, mruSize),
		dents:    make([]byte, 16<<10),
		// Longer targets are files, not sockets: a truncated read of them
		// fails to parse, as it should.
		link: make([]byte, 64),
		path: make([]byte, 0, 32),
	}
}

// Resolve sets Pid on every socket in socks that has an inode: from the
// cache when the inode was seen before, else by at most one scan of
// procRoot however many inodes are new. Sockets without an inode, and those
// whose owner could not be found, get Pid -1. Inodes not in socks are
// forgotten, so the cache is bounded by the live socket count.
func (r *Resolver) Resolve(socks []collector.Socket) {
	r.gen++
	r.want = r.want[:0]
	live := 0
	for i := range socks {
		s := &socks[i]
		if s.Inode == 0 {
			s.Pid = -1
			continue
		}
		e, ok := r.cache[s.Inode]
		if !ok || e.gen != r.gen {
			live++
			if !ok {
				e.pid = -1
			}
			if e.pid < 0 && e.scans < maxScans {
				r.want = append(r.want, s.Inode)
			}
			e.gen = r.gen
			r.cache[s.Inode] = e
		}
		s.Pid = e.pid
	}
	if live < len(r.cache) {
		for ino, e := range r.cache {
			if e.gen != r.gen {
				delete(r.cache, ino)
			}
		}
	}
	if len(r.want) == 0 {
		return
	}

	r.scan()
	for _, ino := range r.want {
		if e := r.cache[ino]; e.pid < 0 {
			e.scans++
			r.cache[ino] = e
		}
	}
	for i := range socks {
		if s := &socks[i]; s.Pid < 0 && s.Inode != 0 {
			s.Pid = r.cache[s.Inode].pid
		}
	}
}

// Stats returns counters since New, and the state of the cache.
func (r *Resolver) Stats() Stats {
	st := r.stats
	st.Cached = len(r.cache)
	for _, e := range r.cache {
		if e.pid < 0 && e.scans >= maxScans {
			st.Unresolved++
		}
	}
	return st
}

// scan reads fd links until every inode in r.want has an owner or every
// process has been visited. Owners are most likely among recent owners,
// then among processes born since the last scan (short-lived children are
// the ones a poller can miss), then among the newest of the rest.
func (r *Resolver) scan() {
	r.stats.Scans++
	r.stats.Denied = 0

	root, errno := openat(unix.AT_FDCWD, r.procRoot, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if errno != 0 {
		return
	}
	defer unix.Close(root)

	r.prev, r.pids = r.pids, r.prev[:0]
	r.listPids(root)
	for pid := range r.fds {
		if _, alive := slices.BinarySearch(r.pids, pid); !alive {
			delete(r.fds, pid)
		}
	}
	// An inode that a trusting scan missed and that is still live may sit
	// behind an fd trusted wrongly (closed and reused while its old socket
	// lives on in another process): look again reading every link. An
	// inode that vanished before the scan is not wanted again, so churn
	// costs no such scans.
	r.trust = true
	for _, ino := range r.want {
		if r.cache[ino].scans > 0 {
			r.trust = false
			r.stats.FullScans++
			break
		}
	}

	left := len(r.want)
	// Finding an owner reorders r.mru; walk the order the scan started with.
	var recent [mruSize]int32
	n := copy(recent[:], r.mru)
	for _, pid := range recent[:n] {
		if _, alive := slices.BinarySearch(r.pids, pid); alive {
			if left -= r.visit(root, pid, left); left == 0 {
				return
			}
		}
	}
	for _, wantNew := range []bool{true, false} {
		j := len(r.prev) - 1
		for i := len(r.pids) - 1; i >= 0; i-- {
			pid := r.pids[i]
			for j >= 0 && r.prev[j] > pid {
				j--
			}
			isNew := j < 0 || r.prev[j] != pid
			if isNew != wantNew || slices.Contains(recent[:n], pid) {
				continue
			}
			if left -= r.visit(root, pid, left); left == 0 {
				return
			}
		}
	}
}

// listPids fills r.pids, sorted, from the directory root.
func (r *Resolver) listPids(root int) {
	for {
		n, err := unix.Getdents(root, r.dents)
		if err != nil || n <= 0 {
			break
		}
		for buf := r.dents[:n]; len(buf) > 0; {
			name, rest, ok := nextDirent(buf)
			if !ok {
				break
			}
			buf = rest
			if pid, ok := parseDirNumber(name); ok {
				r.pids = append(r.pids, pid)
			}
		}
	}
	slices.Sort(r.pids)
}

// visit reads the fd links of pid, records it as the owner of the live
// inodes it holds that have none yet, and returns how many of those were
// wanted by this scan. It stops once it has found limit.
func (r *Resolver) visit(root int, pid int32, limit int) (found int) {
	r.path = strconv.AppendInt(r.path[:0], int64(pid), 10)
	r.path = append(r.path, "/fd\x00"...)
	dir, errno := openat(root, r.path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if errno != 0 {
		// ENOENT: the process has exited since the listing.
		if errno == unix.EACCES || errno == unix.EPERM {
			r.stats.Denied++
		}
		return 0
	}
	defer unix.Close(dir)
	r.stats.Processes++

	t := r.fds[pid]
	if t == nil {
		t = &fdTable{links: make(map[int32]fdLink)}
		r.fds[pid] = t
	}
	t.visits++
	complete := false
	defer func() {
		// Forget closed fds, once the whole directory has been read.
		if complete {
			for fd, l := range t.links {
				if l.seen != t.visits {
					delete(t.links, fd)
				}
			}
		}
	}()

	for {
		n, err := unix.Getdents(dir, r.dents)
		if err != nil || n <= 0 {
			complete = err == nil
			return found
		}
		for buf := r.dents[:n]; len(buf) > 0; {
			name, rest, ok := nextDirent(buf)
			if !ok {
				break
			}
			buf = rest
			fd, ok := parseDirNumber(name)
			if !ok {
				continue
			}
			ino, ok := r.trusted(t, fd)
			if !ok {
				r.stats.Readlinks++
				m, errno := readlinkat(dir, name, r.link)
				if errno != 0 {
					if errno == unix.EACCES || errno == unix.EPERM {
						r.stats.Denied++
						return found
					}
					continue // the fd was closed since the listing
				}
				ino, _ = parseSocketLink(r.link[:m])
			}
			t.links[fd] = fdLink{ino: ino, seen: t.visits}
			if ino == 0 {
				continue
			}
			e, ok := r.cache[ino]
			if !ok || e.gen != r.gen || e.pid >= 0 {
				continue
			}
			e.pid = pid
			r.cache[ino] = e
			r.noteOwner(pid)
			// Inodes given up on are filled when met, but not counted:
			// the scan does not go on for them.
			if e.scans < maxScans {
				if found++; found == limit {
					return found
				}
			}
		}
	}
}

// trusted returns the inode fd pointed to at the last visit if it can be
// taken without reading the link: it was a socket that is still live (an
// fd is reused only once closed, and a closed socket leaves the table
// unless another fd holds it). Any other fd is read: it is new, or it was
// a file or a socket gone since, and its number may hold a new socket.
func (r *Resolver) trusted(t *fdTable, fd int32) (uint64, bool) {
	if !r.trust {
		return 0, false
	}
	l, ok := t.links[fd]
	if !ok || l.ino == 0 {
		return 0, false
	}
	if e, ok := r.cache[l.ino]; !ok || e.gen != r.gen {
		return 0, false
	}
	r.stats.Trusted++
	return l.ino, true
}

func (r *Resolver) noteOwner(pid int32) {
	i := slices.Index(r.mru, pid)
	if i < 0 {
		if len(r.mru) < mruSize {
			r.mru = append(r.mru, 0)
		}
		i = len(r.mru) - 1
	}
	copy(r.mru[1:i+1], r.mru[:i])
	r.mru[0] = pid
}

// Offsets in struct linux_dirent64, the records getdents64(2) returns.
const (
	direntReclen = 16
	direntName   = 19
)

// nextDirent splits the first record off buf and returns its name with the
// terminating NUL, ready to be passed to a syscall.
func nextDirent(buf []byte) (name, rest []byte, ok bool) {
	if len(buf) <= direntName {
		return nil, nil, false
	}
	reclen := int(binary.NativeEndian.Uint16(buf[direntReclen:]))
	if reclen <= direntName || reclen > len(buf) {
		return nil, nil, false
	}
	end := bytes.IndexByte(buf[direntName:reclen], 0)
	if end < 1 {
		return nil, nil, false
	}
	return buf[direntName : direntName+end+1], buf[reclen:], true
}

// parseDirNumber parses a NUL-terminated directory entry name that is a
// decimal number below 2^31: a PID in /proc, an fd in /proc/<pid>/fd.
func parseDirNumber(name []byte) (int32, bool) {
	if len(name) < 2 || name[len(name)-1] != 0 {
		return 0, false
	}
	name = name[:len(name)-1]
	if len(name) > 10 {
		return 0, false
	}
	var n int64
	for _, c := range name {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > 1<<31-1 {
		return 0, false
	}
	return int32(n), true
}

// openat and readlinkat take NUL-terminated paths: the wrappers in
// x/sys/unix copy a Go string per call, one allocation per fd read.

func openat(dirfd int, path []byte, flags int) (int, unix.Errno) {
	fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd),
		uintptr(unsafe.Pointer(&path[0])), uintptr(flags), 0, 0, 0)
	return int(fd), errno
}

func readlinkat(dirfd int, path, buf []byte) (int, unix.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd),
		uintptr(unsafe.Pointer(&path[0])), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	return int(n), errno
}
