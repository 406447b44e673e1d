//go:build !linux

package netstat_watch

import (
	"context"
	"time"

	"www.velocidex.com/golang/vfilter"

	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/enricher"
	"github.com/netwatch-dfir/netwatch/vql/kevents"
	"github.com/netwatch-dfir/netwatch/vql/tracker"
)

// kernelFeed: kernel events exist only on Linux; a watcher elsewhere
// always polls.
type kernelFeed struct{ netns uint32 }

func openKernel(*options) (*kernelFeed, error)                            { return nil, kevents.ErrUnsupported }
func (k *kernelFeed) stop()                                               {}
func (k *kernelFeed) reportDrops(vfilter.Scope, time.Time, time.Duration) {}
func (k *kernelFeed) summary() string                                     { return "" }

func (k *kernelFeed) start(context.Context)          {}
func (k *kernelFeed) events() <-chan []kevents.Event { return nil }
func (k *kernelFeed) convert([]kevents.Event, *enricher.Enricher, bool, collector.Kind, *exclusions) []tracker.SockEvent {
	return nil
}

type nsPart struct {
	netns  uint32
	lo, hi int
}

type nsRound struct {
	parts []nsPart
	first bool
}

func (r *nsRound) gone(uint32) bool { return false }

func (k *kernelFeed) others(_ vfilter.Scope, socks []collector.Socket, _ collector.Kind) ([]collector.Socket, nsRound) {
	return socks, nsRound{}
}
