//go:build linux

package main

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel-pace scenario (issue 12): 1 ms connections at 1,000 per
// second, each from its own child process that exits at once, half
// outbound and half inbound, a quarter of them inside a second network
// namespace. Polling sees almost none of them with their owner; kernel
// events should see every one.

// KpaceRun is one measurement of the kernel-pace scenario for one method.
type KpaceRun struct {
	Method      string
	Run         int
	Asked       float64 // children (connections) asked for per second
	Launched    int     // children started
	Failed      int     // children that did not get their connection (left out of the score)
	LaunchSecs  float64 // time spent launching
	ChildCPU    float64 // seconds of CPU of all children (rusage): what starting them costs
	LauncherCPU float64 // seconds of CPU of the harness over the launching
	CPU         float64 // query process, over Window
	Window      float64
	Rows        int
	MaxRSSKB    int64
	TableFrom   int
	TableTo     int
	Stopped     string `json:",omitempty"` // the watcher's stop line: kernel records read and dropped
	Err         string `json:",omitempty"`
}

// Rate is the launch rate achieved.
func (r KpaceRun) Rate() float64 {
	if r.LaunchSecs <= 0 {
		return math.NaN()
	}
	return float64(r.Launched) / r.LaunchSecs
}

const kpaceChildName = "nwbench-kpace"

// kpaceChildSource is the child (see the file for why it is C).
//
//go:embed cchild/kpace.c
var kpaceChildSource []byte

// buildKpaceChild compiles the child into the helper directory, static
// where the C library allows.
func (h *harness) buildKpaceChild() (string, error) {
	path := filepath.Join(h.dir, kpaceChildName)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	src := filepath.Join(h.dir, "kpace.c")
	if err := os.WriteFile(src, kpaceChildSource, 0o644); err != nil {
		return "", err
	}
	var out []byte
	var err error
	for _, static := range [][]string{{"-static"}, nil} {
		args := append([]string{"-O2", "-o", path, src}, static...)
		if out, err = exec.CommandContext(h.ctx, "cc", args...).CombinedOutput(); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("building the kpace child (needs a C compiler: apt-get install gcc): %v: %s", err, out)
}

func (h *harness) kpaceScenario() error {
	child, err := h.buildKpaceChild()
	if err != nil {
		return err
	}
	ns, err := newNetns(fmt.Sprintf("nwbench-%d", os.Getpid()))
	if err != nil {
		return err
	}
	defer ns.close()
	host, err := netnsInode("/proc/self/ns/net")
	if err != nil {
		return err
	}
	for run := 1; run <= h.cfg.Runs; run++ {
		for _, m := range rotate(h.cfg.KpaceMethods, run-1) {
			if run > h.cfg.runsOf(ScKpace, m) {
				continue
			}
			r, conns, err := h.measureKpace(m, run, child, ns, host)
			if err != nil {
				if h.ctx.Err() != nil {
					return err
				}
				r.Err = err.Error()
				h.fail("kpace %s run %d: %v", m.Key, run, err)
			} else {
				s := summarizeConns(conns)
				h.logf("kpace   %-10s run %d: %d children at %.0f/s (%.0f asked; %.1f ms CPU each, launcher %.1f ms each), %d once with the right Pid+Name, %d duplicates, %.2f ms/s CPU",
					m.Key, run, r.Launched, r.Rate(), r.Asked, 1e3*r.ChildCPU/float64(max(1, r.Launched)),
					1e3*r.LauncherCPU/float64(max(1, r.Launched)), s.OnceRight, s.Dups, 1e3*r.CPU/r.Window)
				if r.Stopped != "" {
					h.logf("kpace   %-10s run %d: %s", m.Key, run, r.Stopped)
				}
			}
			h.res.Kpace = append(h.res.Kpace, r)
			if m.Kind != KernelExcl { // reports none of them, by design
				h.res.KpaceConns = append(h.res.KpaceConns, conns...)
			}
		}
	}
	return nil
}

// steady waits until a method is past its startup: for netstat_watch its
// start line and the first snapshot, for stock its first diff() poll.
func (h *harness) steady(q *queryProc, m Method) error {
	if err := q.warmedUp(h.ctx, h.cfg.Warmup); err != nil {
		return err
	}
	switch m.Kind {
	case Watch, Kernel, KernelExcl:
		ready, err := q.waitReady(h.ctx, 60*time.Second)
		if err == nil {
			err = sleepUntil(h.ctx, ready.Add(max(time.Second, 2*m.period())))
		}
		return err
	case Stock:
		_, _, err := q.waitPoll(h.ctx, 0, 120*time.Second)
		return err
	}
	return nil
}

func (m Method) period() time.Duration { return time.Duration(m.Period * float64(time.Second)) }

func (h *harness) measureKpace(m Method, run int, child string, ns *netns, host uint64) (KpaceRun, []ConnResult, error) {
	cfg := h.cfg
	r := KpaceRun{Method: m.Key, Run: run, Asked: cfg.KpaceRate}
	// The previous measurement's TIME_WAIT remnants last a minute.
	r.TableFrom = h.settle(0)
	l, err := newKpaceListeners(ns)
	if err != nil {
		return r, nil, err
	}
	defer l.close()

	q, err := startQuery(cfg.Binary, m.Query(), true)
	if err != nil {
		return r, nil, err
	}
	q.keepOnly([]byte(`"Diff":"added"`)) // tens of thousands of rows: the matcher reads no other
	q.watch(l.port[false])
	h.track(q.cmd, true)
	defer h.track(q.cmd, false)
	fail := func(err error) (KpaceRun, []ConnResult, error) {
		q.stop()
		return r, nil, err
	}
	if err := h.steady(q, m); err != nil {
		return fail(err)
	}
	c0, _ := taskCPU(q.Pid())
	t0 := time.Now()
	launched, err := h.launchKpace(&r, child, ns, l, run)
	if err != nil {
		return fail(err)
	}
	tail := 2*m.period() + 2*time.Second
	if err := sleepUntil(h.ctx, time.Now().Add(tail)); err != nil {
		return fail(err)
	}
	if err := q.waitQuiet(h.ctx, m.period()+1500*time.Millisecond, 30*time.Second); err != nil {
		return fail(err)
	}
	c1, _ := taskCPU(q.Pid())
	r.CPU, r.Window = (c1 - c0).Seconds(), time.Since(t0).Seconds()
	r.TableTo = tableSize()
	ex := q.stop()
	r.Rows, r.MaxRSSKB, r.Stopped = ex.Rows, ex.MaxRSSKB, ex.Stopped
	results := matchConns(launched, ex.RowData, host)
	for i := range results {
		results[i].Method, results[i].Run = m.Key, run
		results[i].Netns = "host"
		if launched[i].Netns != 0 {
			results[i].Netns = "second"
		}
	}
	return r, results, nil
}

// kpaceListeners are the harness's listeners for the outbound children, one
// in each namespace (key: in the second one); they read each child's pid
// and learn its local port.
type kpaceListeners struct {
	ln    map[bool]net.Listener
	port  map[bool]int
	mu    sync.Mutex
	local map[int]int // child pid -> its local port
	conns sync.WaitGroup
}

func newKpaceListeners(ns *netns) (*kpaceListeners, error) {
	l := &kpaceListeners{ln: map[bool]net.Listener{}, port: map[bool]int{}, local: map[int]int{}}
	for _, inNS := range []bool{false, true} {
		var ln net.Listener
		var err error
		listen := func() { ln, err = net.Listen("tcp4", "127.0.0.1:0") }
		if inNS {
			ns.run(listen)
		} else {
			listen()
		}
		if err != nil {
			l.close()
			return nil, err
		}
		l.ln[inNS], l.port[inNS] = ln, ln.Addr().(*net.TCPAddr).Port
		go l.accept(ln)
	}
	return l, nil
}

func (l *kpaceListeners) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		l.conns.Add(1)
		go func() {
			defer l.conns.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			var b [4]byte
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return
			}
			pid := int(b[0]) | int(b[1])<<8 | int(b[2])<<16 | int(b[3])<<24
			l.mu.Lock()
			l.local[pid] = c.RemoteAddr().(*net.TCPAddr).Port
			l.mu.Unlock()
			io.Copy(io.Discard, c) // until the child closes: it keeps the TIME_WAIT
		}()
	}
}

func (l *kpaceListeners) close() {
	for _, ln := range l.ln {
		ln.Close()
	}
	l.conns.Wait()
}

// launchKpace starts children at cfg.KpaceRate per second on average
// (Poisson arrivals) for cfg.KpaceFor, from a few launching goroutines (a
// fork+exec blocks its thread until the exec is done), with at most
// kpaceLive children alive; it returns the connections of the children
// that got one, once all have exited.
func (h *harness) launchKpace(r *KpaceRun, child string, ns *netns, l *kpaceListeners, run int) ([]Launched, error) {
	const workers, kpaceLive = 4, 256
	cfg := h.cfg
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	lifeUS := strconv.Itoa(int(cfg.KpaceLife / time.Microsecond))
	var (
		mu       sync.Mutex
		launched []Launched
		failed   int
		childCPU time.Duration
		children sync.WaitGroup
	)
	live := make(chan struct{}, kpaceLive)
	jobs := make(chan int, workers)
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	deadline := t0.Add(cfg.KpaceFor)

	start := func(i int) {
		out, inNS := i%2 == 0, i%8 >= 6
		ld := Launched{Dir: "in", Name: kpaceChildName, Lifetime: cfg.KpaceLife}
		args := []string{kpaceChildName, "in", lifeUS}
		if out {
			ld.Dir, ld.RPort = "out", l.port[inNS]
			args = []string{kpaceChildName, "out", strconv.Itoa(l.port[inNS]), lifeUS}
		}
		if inNS {
			ld.Netns = ns.ino
			args = append(args, ns.path)
		}
		files := []*os.File{devnull, devnull, os.Stderr}
		var pr, pw *os.File
		var err error
		if !out {
			if pr, pw, err = os.Pipe(); err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
				<-live
				return
			}
			files[1] = pw
		}
		ld.Launched = time.Now()
		p, err := os.StartProcess(child, args, &os.ProcAttr{Env: []string{}, Files: files})
		if pw != nil {
			pw.Close()
		}
		if err != nil {
			if pr != nil {
				pr.Close()
			}
			mu.Lock()
			failed++
			mu.Unlock()
			<-live
			return
		}
		ld.Pid = p.Pid
		children.Add(1)
		go func() {
			defer children.Done()
			if pr != nil {
				ld.Port, ld.RPort = dialChild(pr, ns, inNS)
				pr.Close()
			}
			st, _ := p.Wait()
			<-live
			ld.Exited = time.Now()
			mu.Lock()
			defer mu.Unlock()
			if st != nil {
				childCPU += st.UserTime() + st.SystemTime()
			}
			launched = append(launched, ld)
		}()
	}
	var workersDone sync.WaitGroup
	for w := 0; w < workers; w++ {
		workersDone.Add(1)
		go func() {
			defer workersDone.Done()
			for i := range jobs {
				select {
				case live <- struct{}{}:
				case <-h.ctx.Done():
					continue
				}
				start(i)
			}
		}()
	}
	rng := rand.New(rand.NewSource(int64(run)))
	next := t0
	i := 0
	for ; h.ctx.Err() == nil; i++ {
		if err := sleepUntil(h.ctx, next); err != nil {
			break
		}
		if !time.Now().Before(deadline) {
			break
		}
		jobs <- i // blocks while every launcher is busy: the rate then drops
		next = next.Add(time.Duration(math.Min(rng.ExpFloat64(), 5) / cfg.KpaceRate * float64(time.Second)))
		if behind := time.Now().Add(-100 * time.Millisecond); next.Before(behind) {
			next = behind // a launcher that fell behind does not burst to catch up
		}
	}
	close(jobs)
	workersDone.Wait()
	r.LaunchSecs = time.Since(t0).Seconds()
	children.Wait()
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	r.LauncherCPU = time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()).Seconds()
	if err := h.ctx.Err(); err != nil {
		return nil, err
	}

	// The outbound children's local ports, as their connections told.
	l.mu.Lock()
	good := launched[:0]
	for _, ld := range launched {
		if ld.Dir == "out" {
			ld.Port = l.local[ld.Pid]
		}
		if ld.Port == 0 || ld.RPort == 0 {
			failed++
			continue
		}
		good = append(good, ld)
	}
	l.mu.Unlock()
	r.Launched, r.Failed, r.ChildCPU = len(launched), failed, childCPU.Seconds()
	if failed > r.Launched/100 {
		return nil, fmt.Errorf("%d of %d children got no connection", failed, r.Launched+failed)
	}
	return good, nil
}

// dialChild reads an inbound child's port from its stdout and connects to
// it (from the child's namespace), keeping the connection until the child
// closes it. It returns the child's port and the harness's.
func dialChild(pr *os.File, ns *netns, inNS bool) (childPort, harnessPort int) {
	pr.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [2]byte
	if _, err := io.ReadFull(pr, b[:]); err != nil {
		return 0, 0
	}
	port := int(b[0])<<8 | int(b[1])
	var c net.Conn
	var err error
	dial := func() { c, err = net.DialTimeout("tcp4", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second) }
	if inNS {
		ns.run(dial)
	} else {
		dial()
	}
	if err != nil {
		return 0, 0
	}
	go func() {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
	}()
	return port, c.LocalAddr().(*net.TCPAddr).Port
}

// --- the second network namespace ------------------------------------------

// netns is a network namespace the harness creates (ip netns add, loopback
// up) and deletes; run executes a function on a thread inside it, where the
// sockets it makes belong to that namespace.
type netns struct {
	name, path string
	ino        uint64
	fns        chan func()
	done       chan struct{}
}

func newNetns(name string) (*netns, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &netns{name: name, path: "/run/netns/" + name}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		n.close()
		return nil, fmt.Errorf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	var err error
	if n.ino, err = netnsInode(n.path); err != nil {
		n.close()
		return nil, err
	}
	n.fns, n.done = make(chan func()), make(chan struct{})
	ready := make(chan error)
	go n.loop(ready, nil)
	if err := <-ready; err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

// loop runs on a thread it moves into the namespace. The thread is never
// unlocked: when loop returns, the runtime ends it rather than reuse a
// thread in the wrong namespace. Never the main thread: its namespace is
// what /proc/self/net (so /proc/net/tcp, tableSize) shows for the whole
// process, and the runtime cannot end it. There, loop hands over to a new
// goroutine, which the main thread's lock keeps on another thread, and
// closes handoff (if any) once it holds a thread of its own.
func (n *netns) loop(ready chan<- error, handoff chan<- struct{}) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		next := make(chan struct{})
		go n.loop(ready, next)
		<-next
		runtime.UnlockOSThread()
		return
	}
	if handoff != nil {
		close(handoff)
	}
	defer close(n.done)
	f, err := os.Open(n.path)
	if err == nil {
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
	}
	ready <- err
	if err != nil {
		return
	}
	for fn := range n.fns {
		fn()
	}
}

func (n *netns) run(fn func()) {
	done := make(chan struct{})
	n.fns <- func() { fn(); close(done) }
	<-done
}

func (n *netns) close() {
	if n.fns != nil {
		close(n.fns)
		<-n.done
	}
	if out, err := exec.Command("ip", "netns", "delete", n.name).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: ip netns delete %s: %v: %s\n", n.name, err, out)
	}
}

// netnsInode is the inode of a network namespace file, as netstat_watch
// reports it in its Netns column.
func netnsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	if st.Ino == 0 {
		return 0, errors.New(path + ": no inode")
	}
	return st.Ino, nil
}
