package netstat_watch

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/Velocidex/ordereddict"
	"www.velocidex.com/golang/vfilter"

	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/enricher"
	"github.com/netwatch-dfir/netwatch/vql/owner"
	"github.com/netwatch-dfir/netwatch/vql/tracker"
)

// watcher runs collector -> owner -> tracker -> enricher once per tick.
type watcher struct {
	opts  *options
	col   collector.Collector
	own   *owner.Resolver
	track *tracker.Tracker
	enr   *enricher.Enricher

	socks     []collector.Socket // reused between ticks
	lastErr   string
	failures  int // consecutive failed snapshots
	warnedAcl bool

	st *stateKeeper // nil without a state file

	// With emit_existing and no state to resume from, the connections of
	// the first snapshot are reported as Existing: their IDs are the
	// first ones the tracker hands out, up to existingUpTo.
	resumed      bool // the tracker was restored from a state file
	firstDone    bool // the tracker has had its first snapshot
	existingUpTo uint64
}

func newWatcher(opts *options) (*watcher, error) {
	col, err := collector.New(opts.backend)
	if err != nil {
		return nil, err
	}
	return &watcher{
		opts: opts,
		col:  col,
		own:  owner.New("/proc"),
		track: tracker.New(tracker.Options{
			EmitExisting: opts.emitExisting,
			// Wait one extra tick for the owner of an accepted socket.
			HoldTicks: 1,
		}),
		enr: enricher.New("/proc", opts.cacheSize),
	}, nil
}

func (self *watcher) Close() error { return self.col.Close() }

// run polls until ctx ends or emit refuses a row.
func (self *watcher) run(ctx context.Context, scope vfilter.Scope,
	emit func(*ordereddict.Dict) bool) {
	ticker := time.NewTicker(self.opts.period)
	defer ticker.Stop()
	if self.st != nil {
		self.st.start(self, scope)
		// Also when emit refuses a row: the rows not delivered are
		// not counted as reported.
		defer func() { self.st.stop(self, scope) }()
	}

	for {
		out := self.tick(scope, time.Now())
		for i := range out {
			if !emit(eventRow(&out[i])) {
				if self.st != nil {
					self.st.undelivered(out[i:])
				}
				return
			}
		}
		if self.st != nil {
			now := time.Now()
			self.st.delivered(now, out)
			self.st.maybeSave(self, now)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// output is an event to report. Its row is built when it is emitted, not
// with the others of its snapshot: a snapshot can end thousands of
// connections at once (a server process exits, a state is resumed), and
// thousands of rows held together cost ~4 KB each.
type output struct {
	ev tracker.Event
	// existing: an added row for a connection that was already open
	// when watching first began (no state resumed), not one seen opening.
	existing bool
}

// tick takes one snapshot and returns the events to report.
func (self *watcher) tick(scope vfilter.Scope, now time.Time) []output {
	socks, err := self.col.Collect(self.opts.kinds, self.socks[:0])
	if err != nil {
		// Log a failure once, not once per tick, and keep the last
		// snapshot's state: a failed poll says nothing about the sockets.
		if msg := err.Error(); msg != self.lastErr {
			scope.Log("%s: %v", pluginName, err)
			self.lastErr = msg
		}
		self.failures++
		self.maybeFallBack(scope)
		return nil
	}
	if self.lastErr != "" {
		scope.Log("%s: socket table readable again", pluginName)
		self.lastErr = ""
	}
	self.failures = 0
	self.socks = socks

	self.own.Resolve(socks)
	// A process that is exiting refuses access too, so only a non-root
	// watcher has a reason to warn.
	if st := self.own.Stats(); st.Denied > 0 && !self.warnedAcl && os.Geteuid() > 0 {
		self.warnedAcl = true
		scope.Log("%s: %d processes could not be inspected (not running as root?); "+
			"their sockets show Pid -1", pluginName, st.Denied)
	}

	var rows []output
	events := self.track.Update(now, socks)
	if !self.firstDone {
		self.firstDone = true
		if self.opts.emitExisting && !self.resumed {
			self.existingUpTo = self.track.NextID()
		}
	}
	if self.st != nil {
		self.st.updated(len(events) > 0)
	}
	for _, ev := range events {
		c := ev.Conn
		if !self.opts.listening && c.Direction == tracker.Listen {
			continue
		}
		if ev.Diff == tracker.Removed && !self.opts.emitRemoved {
			continue
		}
		if ev.Diff == tracker.Added && self.opts.enrich && c.Pid > 0 {
			// Resolved now, while the process is alive: a process that
			// lives half a second is still named.
			if p, err := self.enr.Lookup(c.Pid); err == nil {
				c.Info = p
			}
		}
		rows = append(rows, output{ev: ev,
			existing: ev.Diff == tracker.Added && c.ID <= self.existingUpTo})
	}
	return rows
}

// maybeFallBack moves an auto watcher from netlink to /proc/net when
// netlink keeps failing mid-stream (the kernel refused the socket family,
// a security module changed its mind): the tracker keeps its state, so the
// switch itself reports nothing.
func (self *watcher) maybeFallBack(scope vfilter.Scope) {
	const maxFailures = 3
	if self.opts.backend != "auto" || self.failures < maxFailures ||
		self.col.Name() != "netlink" {
		return
	}
	col, err := collector.New("procfs")
	if err != nil {
		return
	}
	self.col.Close()
	self.col = col
	self.failures = 0
	if socks, err := col.Collect(self.opts.kinds, self.socks[:0]); err == nil {
		self.track.Rebase(socks)
	}
	scope.Log("%s: netlink failed %d times in a row, using /proc/net from now on",
		pluginName, maxFailures)
}

// eventRow is the row of DESIGN.md: netstat()'s columns, so existing queries
// keep working, plus what diff() lacked.
func eventRow(o *output) *ordereddict.Dict {
	ev := &o.ev
	c := ev.Conn
	s := &c.Socket
	row := ordereddict.NewDict().
		Set("Diff", ev.Diff.String()).
		Set("Timestamp", ev.Time).
		Set("Pid", c.Pid).
		Set("Family", uint32(s.Family)).
		Set("Type", uint32(s.Type)).
		Set("FamilyString", s.FamilyString()).
		Set("TypeString", s.TypeString()).
		Set("Laddr", addr(s.Local.Addr().String(), s.Local.Port())).
		Set("Raddr", addr(s.Remote.Addr().String(), s.Remote.Port())).
		Set("Status", s.State.String()).
		Set("ProcInfo", procInfo(c.Info)).
		Set("Direction", string(c.Direction)).
		Set("FirstSeen", c.FirstSeen)
	if ev.Diff == tracker.Removed {
		row.Set("Duration", ev.Duration.Seconds())
	} else {
		row.Set("Duration", nil)
	}
	return row.
		Set("ConnId", c.ID).
		Set("Uid", s.UID).
		Set("Offline", ev.Offline).
		Set("Existing", o.existing)
}

func addr(ip string, port uint16) *ordereddict.Dict {
	return ordereddict.NewDict().Set("IP", ip).Set("Port", uint32(port))
}

// procInfo has the shape of process_tracker_get(), so that queries written
// for it (ProcInfo.Data.Name) keep working. The tracker keeps the
// *enricher.Process resolved at Added (Conn.Info), so the removed row names
// the same process, and a state file can keep it.
func procInfo(info any) any {
	p, ok := info.(*enricher.Process)
	if !ok || p == nil {
		return nil
	}
	return ordereddict.NewDict().
		Set("Id", strconv.Itoa(int(p.Pid))).
		Set("ParentId", strconv.Itoa(int(p.Ppid))).
		Set("StartTime", p.CreateTime).
		Set("Data", ordereddict.NewDict().
			Set("Pid", p.Pid).
			Set("Ppid", p.Ppid).
			Set("Name", p.Name).
			Set("Exe", p.Exe).
			Set("CommandLine", p.CommandLine).
			Set("Username", p.Username).
			Set("CreateTime", p.CreateTime))
}
