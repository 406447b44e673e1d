package netstat_watch

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"www.velocidex.com/golang/vfilter"

	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/tracker"
	"github.com/netwatch-dfir/netwatch/vql/watchstate"
)

// stateTiming is when the state file is written and what it trusts.
type stateTiming struct {
	// interval is the least time between two writes of the state file
	// while the watcher runs; it is also written when the query ends. A
	// crash loses at most the changes of the last interval, and those are
	// reported again after the restart rather than missed (an added
	// connection not in the state is added again; a removed one still in it
	// is removed again). Each write is the whole file, ~150 bytes a
	// connection plus its process once: at 4,000 connections about 0.6 MB
	// every 5 s on a host whose table keeps changing, and nothing on a
	// quiet one.
	interval time.Duration

	// bytesPerSecond bounds the average write rate: a host with tens of
	// thousands of connections (a state of megabytes) is written less often
	// than every interval, so that the agent never wears the disk or spends
	// its CPU re-encoding the table (64k connections: ~10 MB, written every
	// ~80 s). A crash then repeats more rows, and still loses none.
	bytesPerSecond int

	// lag is how long an emitted row is not trusted to have reached the
	// server: Velociraptor batches a client's event rows (the artifact asks
	// for 1 s, plus the server's jitter, 20 s at most by default) and its
	// buffer of unsent rows does not survive the client process. A state
	// saved now counts the rows of the last lag as not yet reported, so
	// that a crash repeats them after the restart (Offline) rather than
	// losing them.
	lag time.Duration
}

// defaultStateTiming is what the registered plugin uses; tests query a
// plugin of their own with shorter times.
var defaultStateTiming = stateTiming{
	interval:       5 * time.Second,
	bytesPerSecond: 128 << 10,
	lag:            30 * time.Second,
}

// maxRemnants bounds the closed connections kept (only so that their
// TIME_WAIT remnants are not reported as new after a restart): under heavy
// churn the table holds one per connection of the last minute. Beyond it the
// oldest are left out, and their remnants come back as added rows with Pid -1.
const maxRemnants = 16384

// stateKeeper keeps the state file of one watcher. Writes go through one
// goroutine so that a slow disk never delays a snapshot; the last write, when
// the query ends, is done in the plugin's own goroutine.
type stateKeeper struct {
	path   string
	kinds  collector.Kind
	boot   string
	timing stateTiming
	track  *tracker.Tracker // keeps the journal of rows delivered but not yet safe

	ready    bool // the tracker has a snapshot: its state is worth saving
	dirty    bool // changed since the last write
	lastSave time.Time
	lastSize atomic.Int64 // bytes of the last state written

	ch   chan *watchstate.File // to the writer; holds the latest state only
	buf  []byte                // the writer's encoding buffer, reused
	done chan struct{}

	mu      sync.Mutex
	lastErr string
}

// loadState reads the state file and primes the tracker with it. It returns
// what the start line says about the state.
func (self *watcher) loadState(scope vfilter.Scope, now time.Time) string {
	path := self.opts.state
	st := &stateKeeper{path: path, kinds: self.opts.kinds, boot: watchstate.BootID(),
		timing: self.opts.stateTiming, track: self.track}
	self.st = st
	f, err := watchstate.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("state %s: none yet", path)
	}
	if err != nil {
		// One line, then as on a first run.
		scope.Log("%s: state file %s unusable, ignored (the first snapshot is the baseline): %v",
			pluginName, path, err)
		return fmt.Sprintf("state %s: starting afresh", path)
	}

	saved := make([]tracker.Saved, 0, len(f.Conns))
	open := 0
	for _, c := range f.Conns {
		// Sockets of tables not read now can say nothing.
		if c.Socket.Kind()&self.opts.kinds == 0 {
			continue
		}
		saved = append(saved, c)
		if !c.Closed {
			open++
		}
	}
	otherBoot := !watchstate.SameBoot(f.Boot, st.boot)
	// The first snapshot resumes from it (tracker.Resume).
	self.resume = &resume{saved: saved, opts: tracker.RestoreOptions{
		NextID:    f.NextID,
		Covered:   func(s *collector.Socket) bool { return f.Kinds&s.Kind() != 0 },
		OtherBoot: otherBoot,
	}}
	msg := fmt.Sprintf("state %s: resuming from %s (%d open connections, saved %v ago",
		path, f.SavedAt.Format(time.RFC3339), open, now.Sub(f.SavedAt).Round(time.Second))
	if otherBoot {
		msg += ", before a reboot"
	}
	return msg + ")"
}

// start runs the writer.
func (self *stateKeeper) start(w *watcher, scope vfilter.Scope) {
	self.ch = make(chan *watchstate.File, 1)
	self.done = make(chan struct{})
	go w.writeStates(self, scope)
}

// writeStates is the writer goroutine (a watcher method so that the
// cancellation test counts it).
func (self *watcher) writeStates(st *stateKeeper, scope vfilter.Scope) {
	defer close(st.done)
	for f := range st.ch {
		st.write(scope, f)
	}
}

// write encodes and writes one state (in the writer goroutine, or at the
// end once it has stopped) and logs a failure once, not once per write.
func (self *stateKeeper) write(scope vfilter.Scope, f *watchstate.File) {
	msg := ""
	var err error
	if self.buf, err = watchstate.WriteFile(self.path, f, self.buf); err != nil {
		msg = err.Error()
	}
	self.lastSize.Store(int64(len(self.buf)))
	self.mu.Lock()
	defer self.mu.Unlock()
	if msg == self.lastErr {
		return
	}
	if msg != "" {
		scope.Log("%s: cannot write state file: %s", pluginName, msg)
	} else {
		scope.Log("%s: state file %s written again", pluginName, self.path)
	}
	self.lastErr = msg
}

// updated notes a snapshot taken by the tracker.
func (self *stateKeeper) updated(changed bool) {
	if !self.ready || changed {
		self.dirty = true
	}
	self.ready = true
}

// delivered notes rows handed to Velociraptor: the tracker's journal
// counts them as reported once timing.lag has passed.
func (self *stateKeeper) delivered(now time.Time, out []output) {
	for i := range out {
		self.track.Delivered(now, out[i].ev)
	}
}

// undelivered notes the rows emit refused: their connections are saved as
// if those rows had not happened, so the next run reports them.
func (self *stateKeeper) undelivered(out []output) {
	for i := range out {
		self.track.Undelivered(out[i].ev)
	}
}

// interval is the least time between two writes: timing.interval, longer
// for a big state (timing.bytesPerSecond).
func (self *stateKeeper) interval() time.Duration {
	t := &self.timing
	return max(t.interval, time.Duration(self.lastSize.Load())*time.Second/time.Duration(t.bytesPerSecond))
}

// maybeSave hands the state to the writer if it changed and the last write
// is interval() old.
func (self *stateKeeper) maybeSave(now time.Time) {
	if !self.ready || !self.dirty || now.Sub(self.lastSave) < self.interval() {
		return
	}
	f := self.snapshot(now)
	select {
	case self.ch <- f:
	default:
		// The writer is still busy with an older state: replace it.
		select {
		case <-self.ch:
		default:
		}
		self.ch <- f
	}
	self.dirty = false
	self.lastSave = now
}

// stop waits for the writer and writes the final state, unless no snapshot
// was ever taken (the state read at start then stays as it was).
func (self *stateKeeper) stop(scope vfilter.Scope) {
	close(self.ch)
	<-self.done
	if !self.ready {
		return
	}
	self.write(scope, self.snapshot(time.Now()))
}

// snapshot is the state to save now, taken in the watcher's goroutine (the
// tracker is not shared); the writer encodes it.
func (self *stateKeeper) snapshot(now time.Time) *watchstate.File {
	saved := self.track.Save(now, tracker.SaveOptions{Lag: self.timing.lag, MaxRemnants: maxRemnants})
	return &watchstate.File{SavedAt: now, Boot: self.boot,
		Kinds: self.kinds, NextID: self.track.NextID(), Conns: saved}
}
