package netstat_watch

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/Velocidex/ordereddict"
	"www.velocidex.com/golang/vfilter"

	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/enricher"
	"github.com/netwatch-dfir/netwatch/vql/kevents"
	"github.com/netwatch-dfir/netwatch/vql/owner"
	"github.com/netwatch-dfir/netwatch/vql/tracker"
)

// watcher runs collector -> owner -> tracker -> enricher once per snapshot
// and, with kernel events, kernel -> enricher -> tracker per batch of
// events.
type watcher struct {
	opts  *options
	col   collector.Collector
	own   *owner.Resolver
	track *tracker.Tracker
	enr   *enricher.Enricher

	kern    *kernelFeed // nil when polling
	kernErr error       // why kernel events are not used (auto)
	netns   uint32      // the network namespace snapshots see; 0 if unknown

	socks     []collector.Socket // reused between ticks
	fullSize  int                // sockets in the last complete snapshot
	lastErr   string
	failures  int // consecutive failed snapshots
	warnedAcl bool

	st     *stateKeeper // nil without a state file
	resume *resume      // a state to resume from at the first snapshot
}

// resume is what a state file gave, for the tracker's first step.
type resume struct {
	saved []tracker.Saved
	opts  tracker.RestoreOptions
}

func newWatcher(opts *options) (*watcher, error) {
	w := &watcher{opts: opts, own: owner.New("/proc"), enr: enricher.New("/proc", opts.cacheSize)}
	if opts.backend == "auto" || opts.backend == "ebpf" {
		// Events and snapshots meet on the socket cookie, which only
		// netlink reports: without it, no kernel events either.
		col, err := collector.New("netlink")
		if err == nil {
			w.kern, err = openKernel(opts)
			if err != nil {
				col.Close()
			} else {
				w.col = col
			}
		}
		if err != nil {
			if opts.backend == "ebpf" {
				return nil, fmt.Errorf("backend=ebpf: kernel events unavailable: %w", err)
			}
			w.kernErr = err
		}
	}
	if w.col == nil {
		backend := opts.backend
		if backend == "ebpf" {
			backend = "auto"
		}
		col, err := collector.New(backend)
		if err != nil {
			return nil, err
		}
		w.col = col
	}
	if w.kern != nil {
		w.netns = w.kern.netns
	} else if ns, err := kevents.SelfNetns(); err == nil {
		w.netns = ns
	}
	w.track = tracker.New(tracker.Options{
		EmitExisting: opts.emitExisting,
		// Wait one extra tick for the owner of an accepted socket.
		HoldTicks: 1,
		Events:    w.kern != nil,
		Netns:     w.netns,
	})
	return w, nil
}

func (self *watcher) Close() error {
	if self.kern != nil {
		self.kern.stop()
	}
	return self.col.Close()
}

// source names the backend in the start line ("every P using X", which
// artifacts and tests parse) and says more after the state's note.
func (self *watcher) source() (name, detail string) {
	if self.kern != nil {
		detail = fmt.Sprintf("kernel events (eBPF) for TCP, with a %s snapshot every %v", self.col.Name(), self.opts.reconcile)
		if self.opts.kinds&(collector.UDP4|collector.UDP6) != 0 {
			detail += fmt.Sprintf("; UDP polled every %v", self.opts.period)
		}
		return "ebpf", detail
	}
	if self.kernErr != nil {
		detail = fmt.Sprintf("kernel events unavailable: %v", self.kernErr)
	}
	return self.col.Name(), detail
}

// run watches until ctx ends or emit refuses a row.
func (self *watcher) run(ctx context.Context, scope vfilter.Scope,
	emit func(*ordereddict.Dict) bool) {
	period := self.opts.period
	var flush <-chan time.Time
	if self.kern != nil {
		// Started before the first snapshot, so that nothing between
		// the two is missed.
		self.kern.start(ctx)
		period = self.opts.reconcile
		t := time.NewTicker(time.Second)
		defer t.Stop()
		flush = t.C
	}
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	// UDP has no kernel events here: its tables are still polled every
	// period (they are small; TCP's is the big one).
	var udpTick <-chan time.Time
	udp := self.opts.kinds & (collector.UDP4 | collector.UDP6)
	if self.kern != nil && udp != 0 {
		t := time.NewTicker(self.opts.period)
		defer t.Stop()
		udpTick = t.C
	}
	if self.st != nil {
		self.st.start(self, scope)
		// Also when emit refuses a row: the rows not delivered are
		// not counted as reported.
		defer func() { self.st.stop(scope) }()
	}

	deliver := func(out []output) bool {
		for i := range out {
			if !emit(self.row(&out[i].ev)) {
				if self.st != nil {
					self.st.delivered(time.Now(), out[:i])
					self.st.undelivered(out[i:])
				}
				return false
			}
		}
		if self.st != nil {
			now := time.Now()
			self.st.delivered(now, out)
			self.st.maybeSave(now)
		}
		return true
	}

	var kch <-chan []kevents.Event
	if self.kern != nil {
		kch = self.kern.events()
	}
	// What the kernel reported before a snapshot goes first, so that the
	// snapshot finds those sockets known (and the first one does not take
	// them as its baseline). Only what is queued now: on a host whose
	// events come faster than they are applied, draining until empty would
	// never end, and the reconciling snapshot (the one thing that catches
	// up with dropped records) would never run.
	drain := func() bool {
		for n := len(kch); kch != nil && n > 0; n-- {
			select {
			case b, ok := <-kch:
				if !ok {
					kch = nil
					return true
				}
				if !deliver(self.applyKernel(b, time.Now())) {
					return false
				}
			default:
				return true
			}
		}
		return true
	}
	if self.resume != nil {
		// Resuming: the first snapshot places the saved connections,
		// which the events then find by cookie.
		if !deliver(self.tick(scope, time.Now(), self.opts.kinds)) || !drain() {
			return
		}
	} else if !drain() || !deliver(self.tick(scope, time.Now(), self.opts.kinds)) {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case b, ok := <-kch:
			if !ok {
				kch = nil
				continue
			}
			if !deliver(self.applyKernel(b, time.Now())) {
				return
			}
		case now := <-flush:
			self.kern.reportDrops(scope, now, self.opts.reconcile)
			if len(kch) > 0 {
				// Behind the kernel: the queued events flush the held
				// connections on their own clock.
				continue
			}
			if !deliver(self.changed(self.track.Flush(now))) {
				return
			}
		case <-udpTick:
			if !deliver(self.tick(scope, time.Now(), udp)) {
				return
			}
		case <-ticker.C:
			if !drain() {
				return
			}
			if !deliver(self.tick(scope, time.Now(), self.opts.kinds)) {
				return
			}
		}
	}
}

// applyKernel merges a batch of kernel events.
func (self *watcher) applyKernel(batch []kevents.Event, now time.Time) []output {
	evs := self.kern.convert(batch, self.enr, self.opts.enrich, self.opts.kinds, &self.opts.exclude)
	return self.changed(self.track.Apply(now, evs))
}

// changed filters events that did not come from a snapshot.
func (self *watcher) changed(events []tracker.Event) []output {
	if self.st != nil && len(events) > 0 {
		self.st.updated(true)
	}
	return self.filter(events)
}

// output is an event to report. Its row is built when it is emitted, not
// with the others of its snapshot: a snapshot can end thousands of
// connections at once (a server process exits, a state is resumed), and
// thousands of rows held together cost ~4 KB each.
type output struct {
	ev tracker.Event
}

// tick takes one snapshot and returns the events to report.
func (self *watcher) tick(scope vfilter.Scope, now time.Time, kinds collector.Kind) []output {
	// A complete snapshot (every table watched), not a UDP-only one
	// between two reconciling snapshots.
	full := kinds == self.opts.kinds
	buf := self.socks[:0]
	if full && cap(buf) < self.fullSize {
		// One allocation of the size last seen (and some), not the
		// doubling growth of append: on a big table that growth is the
		// peak of the process's memory.
		buf = make([]collector.Socket, 0, self.fullSize+self.fullSize/8)
	}
	socks, err := self.col.Collect(kinds, buf)
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
	// With kernel events, the reconciling snapshot covers the other
	// network namespaces too; their owners are resolved with the rest
	// (Resolve forgets the inodes it is not given).
	mine := len(socks)
	var round *nsRound
	if self.kern != nil && full {
		var r nsRound
		socks, r = self.kern.others(scope, socks, kinds)
		round = &r
	}
	self.socks = socks

	self.own.Resolve(socks)
	// A process that is exiting refuses access too, so only a non-root
	// watcher has a reason to warn.
	if st := self.own.Stats(); st.Denied > 0 && !self.warnedAcl && os.Geteuid() > 0 {
		self.warnedAcl = true
		scope.Log("%s: %d processes could not be inspected (not running as root?); "+
			"their sockets show Pid -1", pluginName, st.Denied)
	}

	var events []tracker.Event
	if r := self.resume; r != nil && full {
		self.resume = nil
		events = self.track.Resume(now, socks[:mine], r.saved, r.opts)
	} else {
		events = self.track.UpdateKinds(now, socks[:mine], kinds)
	}
	changed := len(events) > 0
	out := self.filter(events)
	// Filtered before the next call reuses the tracker's slice.
	other := func(netns uint32, socks []collector.Socket, first bool) {
		events := self.track.UpdateNetns(now, netns, socks, kinds, first)
		changed = changed || len(events) > 0
		out = append(out, self.filter(events)...)
	}
	if round != nil {
		for _, p := range round.parts {
			other(p.netns, socks[p.lo:p.hi], round.first)
		}
		for _, ns := range self.track.OtherNetns() {
			if round.gone(ns) {
				other(ns, nil, false)
			}
		}
	}
	if self.st != nil {
		self.st.updated(changed)
	}
	if full {
		self.fullSize = len(socks)
	}
	if round != nil && cap(self.socks) > keepSocks {
		// The reconciling snapshot comes every reconcile seconds and the
		// UDP ones between need a small slice: a big table's (100 bytes a
		// socket) is not kept live in between.
		self.socks = nil
	}
	return out
}

// keepSocks is the most sockets whose slice a watcher keeps between two
// reconciling snapshots.
const keepSocks = 4096

// filter applies the options to the tracker's events and names the owner
// of a connection a snapshot found. The exclusions test what does not
// change between a connection's added and removed events (its addresses;
// its Pid once added), so both are dropped or neither; the tracker still
// tracks it.
func (self *watcher) filter(events []tracker.Event) []output {
	var rows []output
	ex := &self.opts.exclude
	exclude := ex.any()
	for _, ev := range events {
		c := ev.Conn
		if !self.opts.listening && c.Direction == tracker.Listen {
			continue
		}
		if ev.Diff == tracker.Removed && !self.opts.emitRemoved {
			continue
		}
		if exclude && ex.excludes(c.Socket.Local.Addr(), c.Socket.Remote.Addr(), c.Pid) {
			continue
		}
		if ev.Diff == tracker.Added && self.opts.enrich && c.Pid > 0 && c.Info == nil {
			// Resolved now, while the process is alive: a process that
			// lives half a second is still named.
			if p, err := self.enr.Lookup(c.Pid); err == nil {
				c.Info = p
			}
		}
		rows = append(rows, output{ev: ev})
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
		self.col.Name() != "netlink" || self.kern != nil {
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

// row is the row of docs/ARCHITECTURE.md: netstat()'s columns, so existing
// queries keep working, plus what diff() lacked.
func (self *watcher) row(ev *tracker.Event) *ordereddict.Dict {
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
		Set("Status", ev.State.String()).
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
		Set("Netns", self.netnsOf(c)).
		Set("Existing", ev.Existing)
}

// netnsOf is the inode of a connection's network namespace: the one
// kernel events gave, else the watcher's own (snapshots see only that).
func (self *watcher) netnsOf(c *tracker.Conn) any {
	if c.Netns != 0 {
		return c.Netns
	}
	if self.netns != 0 {
		return self.netns
	}
	return nil
}

// Addr is a row's Laddr or Raddr: the shape of netstat()'s, so that
// Laddr.IP and Raddr.Port work as they do there. Structs rather than
// dicts: Velociraptor encodes a dict key by key, a call and a buffer per
// key and value, and the nested dicts were a third of a row's cost.
type Addr struct {
	IP   string
	Port uint32
}

func addr(ip string, port uint16) Addr { return Addr{IP: ip, Port: uint32(port)} }

// ProcInfo has the shape of process_tracker_get()'s answer, so that
// queries written for it (ProcInfo.Data.Name) keep working.
type ProcInfo struct {
	Id        string
	ParentId  string
	StartTime time.Time
	Data      ProcData
}

// ProcData is ProcInfo.Data.
type ProcData struct {
	Pid         int32
	Ppid        int32
	Name        string
	Exe         string
	CommandLine string
	Username    string
	CreateTime  time.Time
}

// procInfo is the row's ProcInfo. The tracker keeps the process resolved
// at Added (Conn.Info), so the removed row names the same process, and a
// state file can keep it.
func procInfo(p *enricher.Process) any {
	if p == nil {
		return nil // NULL in VQL, not a zero struct
	}
	return &ProcInfo{
		Id:        strconv.Itoa(int(p.Pid)),
		ParentId:  strconv.Itoa(int(p.Ppid)),
		StartTime: p.CreateTime,
		Data: ProcData{Pid: p.Pid, Ppid: p.Ppid, Name: p.Name, Exe: p.Exe,
			CommandLine: p.CommandLine, Username: p.Username, CreateTime: p.CreateTime},
	}
}
