//go:build linux

package kevents

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Source is a loaded and attached set of programs. Close detaches them.
type Source struct {
	objs  keventsObjects
	links []link.Link
	rd    *ringbuf.Reader
	opts  Options

	mu      sync.Mutex
	running bool
}

// Open loads the programs, attaches them and returns a Source to read. The
// error says why kernel events are not available here (kernel, BTF,
// privileges), for the caller to fall back to polling.
func Open(opts Options) (*Source, error) {
	opts = opts.withDefaults()
	if _, err := btf.LoadKernelSpec(); err != nil {
		return nil, fmt.Errorf("kernel BTF (needed for BTF tracepoints, Linux >= 5.8 built with CONFIG_DEBUG_INFO_BTF): %w", err)
	}
	spec, err := loadKevents()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF objects: %w", err)
	}
	spec.Maps["events"].MaxEntries = uint32(opts.RingSize)

	s := &Source{opts: opts}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("loading BPF programs: %w", explain(err))
	}
	for _, p := range []*ebpf.Program{s.objs.OnSetState, s.objs.OnSysExit, s.objs.OnExec} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("attaching %v: %w", p, explain(err))
		}
		s.links = append(s.links, l)
	}
	if s.rd, err = ringbuf.NewReader(s.objs.Events); err != nil {
		s.Close()
		return nil, fmt.Errorf("reading the ring buffer: %w", err)
	}
	return s, nil
}

// explain adds what an EPERM most often means.
func explain(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (needs root, or CAP_BPF and CAP_PERFMON)", err)
	}
	return err
}

// Close detaches the programs and frees the maps. It is safe to call more
// than once, and ends a Stream.
func (s *Source) Close() error {
	var errs []error
	if s.rd != nil {
		errs = append(errs, s.rd.Close())
	}
	for _, l := range s.links {
		errs = append(errs, l.Close())
	}
	s.links = nil
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}

// Drops returns how many records did not fit in the ring buffer, per CPU,
// since Open.
func (s *Source) Drops() ([]uint64, error) {
	var perCPU []uint64
	if err := s.objs.Drops.Lookup(uint32(0), &perCPU); err != nil {
		return nil, fmt.Errorf("reading the drop counters: %w", err)
	}
	return perCPU, nil
}

// Stream reads records until ctx ends and sends them in batches: what the
// ring buffer holds after a wakeup, then a pause of Options.Coalesce, so
// that a busy host costs a few wakeups a second, not one per record (no
// pause after a batch of maxBatch records: a burst is read at full speed). The
// channel is closed when the reading goroutine has ended. A record that
// does not parse is counted in Stats, not sent. Call it once.
func (s *Source) Stream(ctx context.Context) <-chan []Event {
	out := make(chan []Event, 16)
	s.mu.Lock()
	if s.running {
		panic("kevents: Stream called twice")
	}
	s.running = true
	s.mu.Unlock()

	stop := context.AfterFunc(ctx, func() {
		// Wakes a ReadInto blocked in its wait (a deadline set now would
		// only apply to the next wait: a quiet host would never end it).
		s.rd.Flush()
	})
	go func() {
		defer close(out)
		defer stop()
		var rec ringbuf.Record
		var batch []Event
		last := 0 // records in the last batch
		for ctx.Err() == nil {
			err := s.rd.ReadInto(&rec)
			if err != nil {
				if !errors.Is(err, ringbuf.ErrFlushed) {
					// Closed under us: nothing more to read.
					return
				}
				continue
			}
			if batch == nil {
				// The size of the last batch, in one allocation: grown
				// by append from nothing, each batch of a busy host
				// copied itself about as many times as it has records.
				batch = make([]Event, 0, min(maxBatch, max(64, last+last/4)))
			}
			if ev, err := Parse(rec.RawSample); err == nil {
				batch = append(batch, ev)
			} else {
				s.opts.BadRecord(err)
			}
			if rec.Remaining > 0 && len(batch) < maxBatch {
				continue
			}
			// A full batch: the ring buffer has more, and a pause now
			// would let a burst overflow it.
			more := len(batch) >= maxBatch
			select {
			case out <- batch:
			case <-ctx.Done():
				return
			}
			last, batch = len(batch), nil
			if s.opts.Coalesce > 0 && !more {
				select {
				case <-time.After(s.opts.Coalesce):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

const maxBatch = 4096

// BootTime converts CLOCK_BOOTTIME nanoseconds (record times, process
// start times) to wall-clock time.
func BootTime(ns uint64) time.Time {
	var ts unix.Timespec
	now := time.Now()
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return time.Time{}
	}
	return now.Add(-time.Duration(uint64(ts.Nano()) - ns))
}

// SelfNetns is the inode of this process's network namespace: the one
// netlink snapshots see.
func SelfNetns() (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return 0, err
	}
	return uint32(st.Ino), nil
}
