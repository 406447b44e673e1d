package kevents

import "time"

// Options tune a Source. The zero value is usable.
type Options struct {
	// RingSize is the ring buffer's size in bytes: a power of two, at
	// least a page (default 4 MiB, about 40,000 socket records).
	RingSize int
	// Coalesce is the pause after each batch (default 100 ms): records
	// wait in the ring buffer meanwhile (the default one holds about
	// 40,000, a few seconds of a very busy host), and the reader wakes up
	// about 10 times a second however busy the host is. Each wakeup costs
	// the whole process a scheduling round and its garbage: at 500
	// connections a second, 10 ms cost netstat_watch half as much again
	// as 100 ms (kernel-cost.sh, WHERE FALSE: 123 against 80 ms/s).
	Coalesce time.Duration
	// BadRecord is told about a record that does not parse (default:
	// ignored). It runs on the reading goroutine.
	BadRecord func(error)
}

const (
	defaultRingSize = 4 << 20
	defaultCoalesce = 100 * time.Millisecond
)

func (o Options) withDefaults() Options {
	if o.RingSize == 0 {
		o.RingSize = defaultRingSize
	}
	if o.Coalesce == 0 {
		o.Coalesce = defaultCoalesce
	}
	if o.BadRecord == nil {
		o.BadRecord = func(error) {}
	}
	return o
}
