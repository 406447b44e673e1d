//go:build linux

package enricher

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of start times in /proc/<pid>/stat. It
// is 100 on every architecture Linux still supports but alpha.
const clockTicks = 100

// Enricher describes processes from procRoot. It is not safe for
// concurrent use.
type Enricher struct {
	procRoot string
	cache    lru
	execs    lru // from exec events (NoteExec); empty without them
	users    map[int32]string
	boot     time.Time
	stat     []byte // reused: stat is read on every Lookup
	stats    lookupStats
}

// New returns an Enricher reading procRoot, normally "/proc", that caches
// up to size processes.
func New(procRoot string, size int) *Enricher {
	return &Enricher{
		procRoot: procRoot,
		cache:    newLRU(size),
		users:    make(map[int32]string),
		stat:     make([]byte, 4096),
	}
}

// Lookup describes the process pid. It reads /proc/<pid>/stat each time,
// to tell the process from an earlier one that had the same PID, and the
// rest only for a process not in the cache.
func (e *Enricher) Lookup(pid int32) (*Process, error) {
	comm, ppid, start, err := e.readStat(pid)
	if err != nil {
		return nil, err
	}
	k := key{pid, start}
	if p := e.cache.get(k); p != nil {
		e.stats.Hits++
		return p, nil
	}
	e.stats.Misses++

	dir := filepath.Join(e.procRoot, strconv.Itoa(int(pid)))
	p := &Process{
		Pid:        pid,
		Ppid:       ppid,
		UID:        -1,
		CreateTime: e.createTime(start),
		StartTicks: start,
	}
	// Details of a process we may not inspect, or that has just exited,
	// are left empty rather than failing the lookup.
	p.Exe, _ = os.Readlink(filepath.Join(dir, "exe"))
	cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
	p.CommandLine = parseCmdline(cmdline)
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	p.Name = processName(string(comm), string(argv0), p.Exe)
	if status, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		if uid, err := parseStatusUID(status); err == nil {
			p.UID = uid
			p.Username = e.username(uid)
		}
	}

	// The PID may have been reused while the details were read. Had it
	// exited, the details are those of the right process, or empty.
	if _, _, again, err := e.readStat(pid); err == nil && again != start {
		return nil, fmt.Errorf("pid %d was reused during lookup", pid)
	}
	e.cache.add(k, p)
	return p, nil
}

// readStat parses /proc/<pid>/stat. comm points into a buffer reused by
// the next call.
func (e *Enricher) readStat(pid int32) (comm []byte, ppid int32, start uint64, err error) {
	path := filepath.Join(e.procRoot, strconv.Itoa(int(pid)), "stat")
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, 0, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	n := 0
	for n < len(e.stat) {
		m, err := unix.Read(fd, e.stat[n:])
		if err != nil {
			return nil, 0, 0, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	comm, ppid, start, err = parseStat(e.stat[:n])
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	return comm, ppid, start, nil
}

func (e *Enricher) createTime(start uint64) time.Time {
	if e.boot.IsZero() {
		b, err := os.ReadFile(filepath.Join(e.procRoot, "stat"))
		if err != nil {
			return time.Time{}
		}
		if e.boot, err = parseBootTime(b); err != nil {
			return time.Time{}
		}
	}
	return e.boot.Add(time.Duration(start) * (time.Second / clockTicks))
}

func (e *Enricher) username(uid int32) string {
	name, ok := e.users[uid]
	if !ok {
		id := strconv.Itoa(int(uid))
		name = id
		if u, err := user.LookupId(id); err == nil {
			name = u.Username
		}
		e.users[uid] = name
	}
	return name
}
