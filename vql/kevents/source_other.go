//go:build !linux

package kevents

import (
	"context"
	"errors"
	"time"
)

// ErrUnsupported: kernel socket events exist only on Linux here.
var ErrUnsupported = errors.New("kernel events need Linux (eBPF)")

// Source is never opened off Linux.
type Source struct{}

func Open(Options) (*Source, error)                     { return nil, ErrUnsupported }
func (s *Source) Close() error                          { return nil }
func (s *Source) Drops() ([]uint64, error)              { return nil, ErrUnsupported }
func (s *Source) Stream(context.Context) <-chan []Event { return nil }
func BootTime(uint64) time.Time                         { return time.Time{} }
func SelfNetns() (uint32, error)                        { return 0, ErrUnsupported }
