//go:build linux

package netstat_watch

import (
	"context"
	"fmt"
	"strings"
	"time"

	"www.velocidex.com/golang/vfilter"

	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/enricher"
	"github.com/netwatch-dfir/netwatch/vql/kevents"
	"github.com/netwatch-dfir/netwatch/vql/tracker"
)

// kernelFeed is the kernel-event side of a watcher: the loaded programs,
// their stream and the drop accounting.
type kernelFeed struct {
	src    *kevents.Source
	ch     <-chan []kevents.Event
	cancel context.CancelFunc
	netns  uint32 // the watcher's own, the one snapshots see

	buf     []tracker.SockEvent // reused between batches
	records uint64              // socket and exec records read
	dropped uint64              // as of the last drop report
	lastLog time.Time

	reconciled bool   // the other namespaces had a first round
	nsErr      string // the last failure to read one, logged once
}

// nsPart is the sockets of one other network namespace in a snapshot.
type nsPart struct {
	netns  uint32
	lo, hi int
}

// nsRound is one round of snapshots of the other namespaces.
type nsRound struct {
	parts  []nsPart
	listed map[uint32]bool // every namespace that exists, read or not
	first  bool            // the watcher's first round: a baseline
}

// gone reports whether a namespace the tracker knows connections in has
// ended (its last process exited): they all ended with it, whatever
// records were lost.
func (r *nsRound) gone(netns uint32) bool { return r.listed != nil && !r.listed[netns] }

// others appends the sockets of every other network namespace (containers,
// pods) to socks, for the reconciling snapshot: the events see every
// namespace, and this finds what they could not tell (connections open
// before start, a record the ring buffer dropped) there too. first: the
// watcher's first round, whose findings are a baseline.
func (k *kernelFeed) others(scope vfilter.Scope, socks []collector.Socket, kinds collector.Kind) (
	[]collector.Socket, nsRound) {
	round := nsRound{first: !k.reconciled}
	k.reconciled = true
	nss, err := collector.Namespaces("/proc", k.netns)
	if err != nil {
		// An incomplete list says nothing about what ended.
		k.logNsErr(scope, err)
	} else {
		round.listed = map[uint32]bool{}
		for _, ns := range nss {
			round.listed[ns.Inode] = true
		}
	}
	for _, ns := range nss {
		lo := len(socks)
		more, err := collector.CollectNetns(ns, kinds, socks)
		if err != nil {
			// Gone since it was listed, or refused: its connections keep
			// what the events say until a round can read it.
			k.logNsErr(scope, err)
			socks = more[:lo]
			continue
		}
		socks = more
		round.parts = append(round.parts, nsPart{netns: ns.Inode, lo: lo, hi: len(socks)})
	}
	return socks, round
}

// logNsErr logs a kind of failure once, not every round: a container
// that ends between the listing and the read is routine.
func (k *kernelFeed) logNsErr(scope vfilter.Scope, err error) {
	msg := err.Error()
	if i := strings.IndexByte(msg, ':'); i > 0 {
		msg = msg[i:] // without the namespace: one line per kind of failure
	}
	if msg == k.nsErr {
		return
	}
	k.nsErr = msg
	scope.Log("%s: reading another network namespace: %v (its connections are reported from kernel events only)",
		pluginName, err)
}

// dropLogEvery bounds the drop reports: a busy host that overflows the
// ring buffer must not flood the client log (shipped to the server).
const dropLogEvery = time.Minute

func openKernel(opts *options) (*kernelFeed, error) {
	netns, err := kevents.SelfNetns()
	if err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	src, err := kevents.Open(kevents.Options{RingSize: opts.ringSize})
	if err != nil {
		return nil, err
	}
	return &kernelFeed{src: src, netns: netns}, nil
}

// start begins reading; the reading goroutine ends with ctx or stop.
func (k *kernelFeed) start(ctx context.Context) {
	ctx, k.cancel = context.WithCancel(ctx)
	k.ch = k.src.Stream(ctx)
}

// stop ends the reading goroutine, waits for it, and detaches the
// programs.
func (k *kernelFeed) stop() {
	if k.cancel != nil {
		k.cancel()
		for range k.ch {
		}
	}
	k.src.Close()
}

// convert turns a batch into the tracker's socket events, describing the
// owner from the kernel's facts; exec records feed the enricher. A
// connection ex excludes is tracked but not described: its row will not be
// built (a loopback-heavy host pays for no process details it drops).
func (k *kernelFeed) convert(batch []kevents.Event, enr *enricher.Enricher, enrich bool, kinds collector.Kind,
	ex *exclusions) []tracker.SockEvent {
	k.records += uint64(len(batch))
	boot := kevents.BootTime(0)
	out := k.buf[:0]
	for i := range batch {
		ev := &batch[i]
		if ev.Kind == kevents.Exec {
			if enrich {
				enr.NoteExec(task(ev, boot), ev.Filename, ev.Cmdline)
			}
			continue
		}
		if collector.KindOf(ev.Sock.Family, collector.SOCK_STREAM)&kinds == 0 {
			continue
		}
		se := tracker.SockEvent{Socket: ev.Socket(), Old: ev.Sock.Old, Netns: ev.Sock.Netns,
			Owner: ev.ByOwner(), Accepted: ev.Kind == kevents.Accept,
			Time: boot.Add(time.Duration(ev.Time))}
		if se.Owner {
			se.Socket.Pid = ev.Task.Pid
			s := &se.Socket
			if enrich && !(ex.any() && ex.excludes(s.Local.Addr(), s.Remote.Addr(), s.Pid)) {
				se.Info = enr.FromKernel(task(ev, boot))
			}
		}
		out = append(out, se)
	}
	k.buf = out
	return out
}

func task(ev *kevents.Event, boot time.Time) enricher.Task {
	return enricher.Task{Pid: ev.Task.Pid, Ppid: ev.Task.Ppid, UID: ev.Task.UID, Comm: ev.Task.Comm,
		StartTicks: ev.Task.StartTicks(), CreateTime: boot.Add(time.Duration(ev.Task.Start))}
}

// drops is the number of records the ring buffer had no room for.
func (k *kernelFeed) drops() (uint64, error) {
	perCPU, err := k.src.Drops()
	var n uint64
	for _, d := range perCPU {
		n += d
	}
	return n, err
}

// reportDrops logs new drops, at most once per dropLogEvery.
func (k *kernelFeed) reportDrops(scope vfilter.Scope, now time.Time, reconcile time.Duration) {
	if now.Sub(k.lastLog) < dropLogEvery {
		return
	}
	n, err := k.drops()
	if err != nil || n == k.dropped {
		return
	}
	scope.Log("%s: the kernel event ring buffer was full: %d records lost since the last report "+
		"(%d in all); the snapshot every %v reports what they were about (Pid from /proc)",
		pluginName, n-k.dropped, n, reconcile)
	k.dropped, k.lastLog = n, now
}

// summary is the figure of the stop line.
func (k *kernelFeed) summary() string {
	n, _ := k.drops()
	return fmt.Sprintf("%d kernel records read, %d dropped", k.records, n)
}

func (k *kernelFeed) events() <-chan []kevents.Event { return k.ch }
