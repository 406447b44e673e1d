package kevents

import "time"

// Options tune a Source. The zero value is usable.
type Options struct {
	// RingSize is the ring buffer's size in bytes: a power of two, at
	// least a page (default 4 MiB, about 40,000 socket records).
	RingSize int
	// Coalesce is the pause after each batch (default 10 ms): records wait
	// in the ring buffer meanwhile, and the reader wakes up at most 100
	// times a second however busy the host is.
	Coalesce time.Duration
	// BadRecord is told about a record that does not parse (default:
	// ignored). It runs on the reading goroutine.
	BadRecord func(error)
}

const (
	defaultRingSize = 4 << 20
	defaultCoalesce = 10 * time.Millisecond
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
