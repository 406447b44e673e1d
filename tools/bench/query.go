//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// taskCPU is the CPU time (user+sys) of pid: the sum over its live
// threads from /proc/PID/task/*/schedstat (nanoseconds), or, when more,
// /proc/PID/stat's (10 ms ticks, but counting the threads that have ended:
// a Go thread ends when a goroutine exits locked to it, and takes its time
// out of the per-thread sum).
func taskCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue // thread gone
		}
		f := bytes.Fields(b)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err == nil {
			sum += n
		}
	}
	return max(time.Duration(sum), statCPU(pid)), nil
}

// statCPU is utime + stime of /proc/PID/stat, ended threads included; 0
// when it cannot be read.
func statCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command, which may hold spaces, end with ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(u+s) * tick
}

// Arrival is one line of the query's output and when the harness read it.
type Arrival struct {
	At   time.Time
	Line []byte
}

// queryProc is one running `velociraptor query`.
type queryProc struct {
	cmd   *exec.Cmd
	Start time.Time

	mu       sync.Mutex
	polls    []time.Time // "diff: Running query" log lines (stock)
	ready    time.Time   // "netstat_watch: watching" log line
	compiled time.Time   // "Compiled all artifacts": Velociraptor's startup work is done
	compCh   chan struct{}
	pollCh   chan struct{}
	readyCh  chan struct{}
	keepRows bool
	only     []byte // rows kept must contain it (nil: all)
	rows     []Arrival
	nrows    int
	mark     []byte    // rows containing it are the harness's own
	lastMark time.Time // when the last such row arrived
	logTail  []string
	readers  sync.WaitGroup
}

// startQuery runs `velociraptor query` with jsonl output, verbose logging
// (diff() logs each poll, which the harness counts) and at most one second
// of output batching.
func startQuery(binary, vql string, keepRows bool) (*queryProc, error) {
	cmd := exec.Command(binary, "query", "-v", "--nobanner", "--max_wait=1",
		"--format", "jsonl", vql)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	q := &queryProc{cmd: cmd, keepRows: keepRows,
		pollCh: make(chan struct{}, 1024), readyCh: make(chan struct{}), compCh: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	q.Start = time.Now()
	q.readers.Add(2)
	go q.readStdout(stdout)
	go q.readStderr(stderr)
	return q, nil
}

func (q *queryProc) Pid() int { return q.cmd.Process.Pid }

func (q *queryProc) readStdout(r io.Reader) {
	defer q.readers.Done()
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			now := time.Now()
			q.mu.Lock()
			q.nrows++
			if q.mark != nil && bytes.Contains(line, q.mark) {
				q.lastMark = now
			}
			if q.keepRows && (q.only == nil || bytes.Contains(line, q.only)) {
				q.rows = append(q.rows, Arrival{now, line})
			}
			q.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (q *queryProc) readStderr(r io.Reader) {
	defer q.readers.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		now := time.Now()
		q.mu.Lock()
		switch {
		case strings.Contains(line, "diff: Running query"):
			q.polls = append(q.polls, now)
			select {
			case q.pollCh <- struct{}{}:
			default:
			}
		case strings.Contains(line, "Compiled all artifacts"):
			if q.compiled.IsZero() {
				q.compiled = now
				close(q.compCh)
			}
		case strings.Contains(line, "netstat_watch: watching"):
			if q.ready.IsZero() {
				q.ready = now
				close(q.readyCh)
			}
		}
		if strings.Contains(line, "[ERROR]") || strings.Contains(line, "panic") ||
			strings.Contains(line, "netstat_watch:") {
			q.logTail = append(q.logTail, line)
			if len(q.logTail) > 20 {
				q.logTail = q.logTail[1:]
			}
		}
		q.mu.Unlock()
	}
}

// Polls returns how many diff() polls started so far and the last one's time.
func (q *queryProc) Polls() (int, time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.polls) == 0 {
		return 0, time.Time{}
	}
	return len(q.polls), q.polls[len(q.polls)-1]
}

func (q *queryProc) PollTimes() []time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]time.Time(nil), q.polls...)
}

// waitPoll waits for the next diff() poll after count polls have been seen.
func (q *queryProc) waitPoll(ctx context.Context, after int, timeout time.Duration) (int, time.Time, error) {
	deadline := time.After(timeout)
	for {
		if n, t := q.Polls(); n > after {
			return n, t, nil
		}
		select {
		case <-q.pollCh:
		case <-deadline:
			return 0, time.Time{}, fmt.Errorf("no diff() poll within %v (%s)", timeout, q.tail())
		case <-ctx.Done():
			return 0, time.Time{}, ctx.Err()
		}
	}
}

// warmedUp waits until Velociraptor's startup work is over (its "Compiled
// all artifacts" line plus a second, at most 30 s) and at least warmup
// after the start: on a loaded machine startup takes longer than usual.
func (q *queryProc) warmedUp(ctx context.Context, warmup time.Duration) error {
	t := q.Start.Add(warmup)
	select {
	case <-q.compCh:
		q.mu.Lock()
		if c := q.compiled.Add(time.Second); c.After(t) {
			t = c
		}
		q.mu.Unlock()
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	return sleepUntil(ctx, t)
}

// watch marks the rows that mention the harness's own listener port.
func (q *queryProc) watch(port int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.mark = fmt.Appendf(nil, `"Port":%d}`, port)
}

// keepOnly keeps only the rows containing b.
func (q *queryProc) keepOnly(b []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.only = b
}

// waitQuiet waits until no row of the harness's own (see watch) has arrived
// for quiet, at most max: rows still queued in the query's pipeline when it
// stops are lost, and a busy query can lag behind.
func (q *queryProc) waitQuiet(ctx context.Context, quiet, max time.Duration) error {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		q.mu.Lock()
		last := q.lastMark
		q.mu.Unlock()
		if time.Since(last) >= quiet {
			return nil
		}
		if err := sleepUntil(ctx, last.Add(quiet)); err != nil {
			return err
		}
	}
	return nil
}

// waitReady waits for netstat_watch's start line.
func (q *queryProc) waitReady(ctx context.Context, timeout time.Duration) (time.Time, error) {
	select {
	case <-q.readyCh:
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.ready, nil
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("netstat_watch did not start within %v (%s)", timeout, q.tail())
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

func (q *queryProc) tail() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return strings.Join(q.logTail, " | ")
}

// queryExit is what the kernel says about the whole life of the process.
type queryExit struct {
	TotalCPU time.Duration // user+sys over its whole life
	MaxRSSKB int64
	Rows     int
	RowData  []Arrival
	Stopped  string // netstat_watch's stop line (records read and dropped), if any
}

// stop interrupts the query (Velociraptor cancels and exits), kills its
// process group if it does not exit within 10 s, and returns its rusage.
func (q *queryProc) stop() queryExit {
	_ = q.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { q.readers.Wait(); q.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-q.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	ex := queryExit{}
	if ps := q.cmd.ProcessState; ps != nil {
		ex.TotalCPU = ps.UserTime() + ps.SystemTime()
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			ex.MaxRSSKB = ru.Maxrss
		}
	}
	q.mu.Lock()
	ex.Rows, ex.RowData = q.nrows, q.rows
	for _, l := range q.logTail {
		if i := strings.Index(l, "netstat_watch: stopped:"); i >= 0 {
			ex.Stopped = strings.TrimSpace(l[i:])
		}
	}
	q.mu.Unlock()
	return ex
}

// sleepUntil sleeps until t or ctx ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tableSize counts the sockets in the kernel's TCP and UDP tables (what
// every method has to read on each poll), from /proc/net.
func tableSize() int {
	n := 0
	for _, f := range []string{"tcp", "tcp6", "udp", "udp6"} {
		file, err := os.Open("/proc/net/" + f)
		if err != nil {
			continue
		}
		br := bufio.NewReaderSize(file, 1<<16)
		lines := -1 // header
		for {
			_, err := br.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				break
			}
			lines++
		}
		file.Close()
		if lines > 0 {
			n += lines
		}
	}
	return n
}

// processCount counts the processes in /proc.
func processCount() int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			n++
		}
	}
	return n
}
