//go:build linux

package netstat_watch

import (
	"context"
	"fmt"
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
// owner from the kernel's facts; exec records feed the enricher.
func (k *kernelFeed) convert(batch []kevents.Event, enr *enricher.Enricher, enrich bool, kinds collector.Kind) []tracker.SockEvent {
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
			if enrich {
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
