package enricher

import (
	"bytes"
	"errors"
	"path"
	"strings"
	"time"
)

var (
	errStat     = errors.New("malformed stat")
	errStatus   = errors.New("no real UID in status")
	errBootTime = errors.New("no btime in /proc/stat")
)

// parseStat reads the command name, parent PID and start time (in clock
// ticks since boot) from the contents of /proc/<pid>/stat. The name is
// taken between the first '(' and the last ')': it is chosen by the
// process and may itself hold spaces and parentheses. comm points into b.
func parseStat(b []byte) (comm []byte, ppid int32, startTicks uint64, err error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return nil, 0, 0, errStat
	}
	comm = b[open+1 : end]

	// Fields after the name, numbered as in proc(5): 3 is the state.
	rest := b[end+1:]
	var p, start uint64
	var okP, okS bool
	for n := 3; n <= 22; n++ {
		if len(rest) == 0 || rest[0] != ' ' {
			return nil, 0, 0, errStat
		}
		rest = rest[1:]
		i := bytes.IndexAny(rest, " \n")
		if i < 0 {
			i = len(rest)
		}
		switch n {
		case 4:
			p, okP = parseUint(rest[:i])
		case 22:
			start, okS = parseUint(rest[:i])
		}
		rest = rest[i:]
	}
	if !okP || p > 1<<31-1 || !okS {
		return nil, 0, 0, errStat
	}
	return comm, int32(p), start, nil
}

// parseStatusUID reads the real UID from the contents of /proc/<pid>/status.
func parseStatusUID(b []byte) (uid int32, err error) {
	v, ok := lineValue(b, "Uid:")
	if !ok {
		return 0, errStatus
	}
	// Real, effective, saved and filesystem UIDs, tab-separated.
	f := bytes.Fields(v)
	if len(f) == 0 {
		return 0, errStatus
	}
	u, ok := parseUint(f[0])
	if !ok || u > 1<<31-1 {
		return 0, errStatus
	}
	return int32(u), nil
}

// lineValue returns what follows prefix on the first line that starts with
// it, in the line-oriented /proc files.
func lineValue(b []byte, prefix string) ([]byte, bool) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if v, ok := bytes.CutPrefix(line, []byte(prefix)); ok {
			return v, true
		}
	}
	return nil, false
}

// parseCmdline turns the contents of /proc/<pid>/cmdline, NUL-terminated
// arguments, into one line with the arguments separated by spaces.
func parseCmdline(b []byte) string {
	return strings.ReplaceAll(string(bytes.TrimRight(b, "\x00")), "\x00", " ")
}

// parseBootTime reads the boot time, the "btime" line, from the contents of
// /proc/stat.
func parseBootTime(b []byte) (time.Time, error) {
	v, ok := lineValue(b, "btime ")
	if !ok {
		return time.Time{}, errBootTime
	}
	sec, ok := parseUint(bytes.TrimSpace(v))
	if !ok || sec > 1<<63-1 {
		return time.Time{}, errBootTime
	}
	return time.Unix(int64(sec), 0), nil
}

// processName names a process as pslist() does: the kernel keeps only the
// first 15 bytes of a name, so a name that long is replaced by the longer
// one it is the start of, taken from argv[0] or else from the executable.
func processName(comm, argv0, exe string) string {
	const commLen = 15 // TASK_COMM_LEN less the NUL
	if len(comm) < commLen {
		return comm
	}
	for _, p := range []string{argv0, exe} {
		if p == "" {
			continue
		}
		if base := path.Base(p); strings.HasPrefix(base, comm) {
			return base
		}
	}
	return comm
}

// parseUint parses a decimal number without sign.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
