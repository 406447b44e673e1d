// Package netstat_watch is the VQL event plugin netstat_watch(): it polls the
// socket table below one second, diffs it in-process and emits one row when a
// connection appears and one when it ends, with the owning process.
//
// It replaces the stock `diff(query={SELECT ... FROM netstat()}, period=N)`
// pattern, which can only poll at whole seconds, walks every fd of every
// process on every poll, keys its diff on a PID that changes when a socket
// enters TIME_WAIT (so each connection is reported twice), and names the
// process from a tracker that has not seen short-lived processes yet.
//
// Only this package knows about VQL; the collector, owner, tracker and
// enricher packages do the work.
package netstat_watch

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/Velocidex/ordereddict"
	"www.velocidex.com/golang/velociraptor/acls"
	"www.velocidex.com/golang/velociraptor/utils"
	vql_subsystem "www.velocidex.com/golang/velociraptor/vql"
	"www.velocidex.com/golang/vfilter"
	"www.velocidex.com/golang/vfilter/arg_parser"

	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/ipset"
)

const pluginName = "netstat_watch"

// Below 10 ms a poll of a busy host's table costs more than the interval.
const minPeriod = 0.01

// NetstatWatchArgs documents the plugin in the GUI's VQL help: keep the doc
// tags complete, docs/vql/netstat_watch.yaml is checked against them.
type NetstatWatchArgs struct {
	Period          float64       `vfilter:"optional,field=period,doc=Seconds between two snapshots of the socket table when polling (float, sub-second allowed, at least 0.01; default 1)."`
	Kinds           []string      `vfilter:"optional,field=kinds,doc=Socket tables to watch: any of tcp, tcp6, udp, udp6 (default all)."`
	Listening       bool          `vfilter:"optional,field=listening,doc=Also report listening TCP sockets and unconnected UDP sockets (default true)."`
	EmitExisting    bool          `vfilter:"optional,field=emit_existing,doc=Report the sockets present at start as added with Existing true (default false: the first snapshot is the baseline, as with diff()). Only on a first start: when a state file is resumed, what changed meanwhile is reported Offline instead."`
	EmitRemoved     bool          `vfilter:"optional,field=emit_removed,doc=Emit a removed row when a connection ends (default true)."`
	Enrich          bool          `vfilter:"optional,field=enrich,doc=Resolve process details (ProcInfo) when a connection is first seen (default true)."`
	Backend         string        `vfilter:"optional,field=backend,doc=Where connections come from: auto (default: kernel events where they load, else polling), ebpf (kernel events on Linux >= 5.8 with BTF, as root or with CAP_BPF and CAP_PERFMON; fails the query when they do not load), netlink or procfs (polling the socket table every period; Linux), or polling on other systems."`
	Reconcile       float64       `vfilter:"optional,field=reconcile,doc=With kernel events: seconds between two snapshots of the socket tables of every network namespace, which report what was open before start and what the events missed, and UDP in other namespaces (default 15, at least 1)."`
	RingSize        int64         `vfilter:"optional,field=ring_size,doc=With kernel events: size of the kernel's event ring buffer in KiB, a power of two of at least 4 (default 4096). Records that find it full are counted and reported in the log."`
	CacheSize       int64         `vfilter:"optional,field=cache_size,doc=Most processes kept in the process details cache (default 4096)."`
	ExcludeLoopback bool          `vfilter:"optional,field=exclude_loopback,doc=Drop connections whose remote address is loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) and sockets with no remote address (listeners, unconnected UDP) bound to a loopback address, before their row is built (default false)."`
	ExcludePids     []vfilter.Any `vfilter:"optional,field=exclude_pids,doc=Drop connections owned by these process IDs, e.g. [getpid()] for the client's own traffic (default none). A connection whose owner is unknown (Pid -1) is kept."`
	ExcludeNetworks []string      `vfilter:"optional,field=exclude_networks,doc=Drop connections whose remote address is in one of these networks: IP addresses or CIDRs, IPv4 or IPv6; an IPv4 network also matches its IPv4-mapped IPv6 form and the other way round (default none). A malformed entry fails the query."`
	State           string        `vfilter:"optional,field=state,doc=File where the connections reported and still open are kept across restarts (default none). When it exists at start: what changed while not watching is reported with Offline true (added: opened since; removed: ended since) instead of taking the first snapshot as a baseline. Written atomically (mode 0600) at most every 5 s when something changed (less often for a big state) and when the query ends. Needs FILESYSTEM_WRITE."`
}

// options are validated arguments with their defaults applied.
type options struct {
	period       time.Duration
	kinds        collector.Kind
	listening    bool
	emitExisting bool
	emitRemoved  bool
	enrich       bool
	backend      string
	reconcile    time.Duration
	ringSize     int // bytes
	cacheSize    int
	state        string // state file path; "" for none
	stateTiming  stateTiming
	exclude      exclusions
}

// exclusions are the filters applied to a connection before its row is
// built: what a client artifact would otherwise drop in VQL, after paying
// for the row and a VQL call per row. Compiled once; excludes allocates
// nothing.
type exclusions struct {
	loopback bool
	pids     map[int32]struct{} // nil: none
	networks *ipset.Set         // nil: none
	note     string             // for the start line; "" when none
}

func (e *exclusions) any() bool {
	return e.loopback || e.pids != nil || e.networks != nil
}

// excludes is the artifact's KeepAddresses() and own-Pid test for one
// connection. An unknown owner (pid < 0) is never excluded by pid.
func (e *exclusions) excludes(local, remote netip.Addr, pid int32) bool {
	if e.loopback && isLoopback(local, remote) {
		return true
	}
	if e.networks != nil && remote.IsValid() && e.networks.LookupAddr(remote) >= 0 {
		return true
	}
	if e.pids != nil && pid > 0 {
		if _, ok := e.pids[pid]; ok {
			return true
		}
	}
	return false
}

// isLoopback is the artifact's NetwatchIsLoopback(): the remote address
// is loopback or, for a socket without one (0.0.0.0, ::, none), the local
// address is. IsLoopback takes ::ffff:127.x as loopback, as cidr_contains()
// does.
func isLoopback(local, remote netip.Addr) bool {
	if !remote.IsValid() || remote.IsUnspecified() {
		return local.IsValid() && local.IsLoopback()
	}
	return remote.IsLoopback()
}

// parseExclusions compiles the exclude_* arguments.
func parseExclusions(a *NetstatWatchArgs) (exclusions, error) {
	e := exclusions{loopback: a.ExcludeLoopback}
	for i, v := range a.ExcludePids {
		pid, ok := utils.ToInt64(v)
		if _, isBool := v.(bool); isBool || !ok || pid < math.MinInt32 || pid > math.MaxInt32 {
			return e, fmt.Errorf("exclude_pids: entry %d (%v) is not a process ID", i, v)
		}
		if e.pids == nil {
			e.pids = make(map[int32]struct{}, len(a.ExcludePids))
		}
		e.pids[int32(pid)] = struct{}{}
	}
	if len(a.ExcludeNetworks) > 0 {
		set, ok := ipset.New(a.ExcludeNetworks)
		for i, good := range ok {
			if !good {
				_, err := ipset.Parse(a.ExcludeNetworks[i])
				return e, fmt.Errorf("exclude_networks: entry %d: %v", i, err)
			}
		}
		e.networks = set
	}
	// The start line says what is dropped: a client log is where an
	// analyst finds why a connection was never reported.
	var what []string
	if e.loopback {
		what = append(what, "loopback")
	}
	if e.pids != nil {
		what = append(what, fmt.Sprintf("pids %v", a.ExcludePids))
	}
	switch n := len(a.ExcludeNetworks); {
	case n > 4:
		what = append(what, fmt.Sprintf("%d networks", n))
	case n > 0:
		what = append(what, "networks "+strings.Join(a.ExcludeNetworks, ", "))
	}
	if what != nil {
		e.note = "; excluding " + strings.Join(what, "; ")
	}
	return e, nil
}

// parseOptions applies defaults: vfilter cannot tell an absent bool from
// false, so the raw args say which defaults-true switches were given.
func parseOptions(a *NetstatWatchArgs, raw *ordereddict.Dict) (*options, error) {
	o := &options{listening: true, emitRemoved: true, enrich: true,
		emitExisting: a.EmitExisting, backend: "auto", cacheSize: 4096,
		reconcile: 15 * time.Second, ringSize: 4 << 20,
		stateTiming: defaultStateTiming}
	period := 1.0
	if _, ok := raw.Get("period"); ok {
		period = a.Period
	}
	if math.IsNaN(period) || math.IsInf(period, 0) || period < minPeriod {
		return nil, fmt.Errorf("period must be a number of seconds of at least %v, not %v", minPeriod, period)
	}
	o.period = time.Duration(period * float64(time.Second))

	var err error
	if o.kinds, err = collector.ParseKinds(a.Kinds); err != nil {
		return nil, fmt.Errorf("kinds: %w", err)
	}
	if _, ok := raw.Get("listening"); ok {
		o.listening = a.Listening
	}
	if _, ok := raw.Get("emit_removed"); ok {
		o.emitRemoved = a.EmitRemoved
	}
	if _, ok := raw.Get("enrich"); ok {
		o.enrich = a.Enrich
	}
	switch a.Backend {
	case "":
	case "auto", "ebpf", "netlink", "procfs":
		o.backend = a.Backend
	default:
		return nil, fmt.Errorf("backend must be auto, ebpf, netlink or procfs, not %q", a.Backend)
	}
	if _, ok := raw.Get("reconcile"); ok {
		if math.IsNaN(a.Reconcile) || math.IsInf(a.Reconcile, 0) || a.Reconcile < 1 {
			return nil, fmt.Errorf("reconcile must be a number of seconds of at least 1, not %v", a.Reconcile)
		}
		o.reconcile = time.Duration(a.Reconcile * float64(time.Second))
	}
	if _, ok := raw.Get("ring_size"); ok {
		if a.RingSize < 4 || a.RingSize > 1<<20 || a.RingSize&(a.RingSize-1) != 0 {
			return nil, fmt.Errorf("ring_size must be a power of two between 4 and 1048576 (KiB), not %d", a.RingSize)
		}
		o.ringSize = int(a.RingSize) << 10
	}
	if _, ok := raw.Get("cache_size"); ok {
		if a.CacheSize < 1 {
			return nil, fmt.Errorf("cache_size must be at least 1, not %d", a.CacheSize)
		}
		o.cacheSize = int(a.CacheSize)
	}
	o.state = a.State
	if o.exclude, err = parseExclusions(a); err != nil {
		return nil, err
	}
	return o, nil
}

// NetstatWatchPlugin is registered with the default state timings; tests
// add one with shorter timings to the scope they query.
type NetstatWatchPlugin struct {
	stateTiming *stateTiming // nil: defaultStateTiming
}

func (self NetstatWatchPlugin) Call(ctx context.Context,
	scope vfilter.Scope, args *ordereddict.Dict) <-chan vfilter.Row {
	output_chan := make(chan vfilter.Row)

	go func() {
		defer close(output_chan)
		defer vql_subsystem.RegisterMonitor(ctx, pluginName, args)()

		// Argument and setup errors are logged at ERROR level ("ERROR:"
		// prefix): Velociraptor then marks the collection, notebook cell or
		// `query` command failed, which a plain log line does not do.
		err := vql_subsystem.CheckAccess(scope, acls.MACHINE_STATE)
		if err != nil {
			scope.Error("%s: %v", pluginName, err)
			return
		}

		// netstat_watch(`**`=dict(...)): the parser reads the dict, and
		// so must parseOptions, which looks for the defaults-true
		// switches by name.
		args = arg_parser.NormalizeArgs(args)
		arg := &NetstatWatchArgs{}
		err = arg_parser.ExtractArgsWithContext(ctx, scope, args, arg)
		if err != nil {
			scope.Error("%s: %v", pluginName, err)
			return
		}
		opts, err := parseOptions(arg, args)
		if err != nil {
			scope.Error("%s: %v", pluginName, err)
			return
		}
		if self.stateTiming != nil {
			opts.stateTiming = *self.stateTiming
		}
		// The state file is created or replaced wherever the caller says,
		// so, as for any VQL that writes files, that takes FILESYSTEM_WRITE
		// (an analyst with MACHINE_STATE must not overwrite the server's
		// files through a notebook).
		if opts.state != "" {
			if err := vql_subsystem.CheckAccess(scope, acls.FILESYSTEM_WRITE); err != nil {
				scope.Error("%s: state: %v", pluginName, err)
				return
			}
		}

		w, err := newWatcher(opts)
		if err != nil {
			scope.Error("%s: %v", pluginName, err)
			return
		}
		defer w.Close()

		stateNote := ""
		if opts.state != "" {
			stateNote = "; " + w.loadState(scope, time.Now())
		}

		// One line at start; then only errors. Stock diff() and netstat()
		// log every poll, and client logs are shipped to the server.
		name, detail := w.source()
		if detail != "" {
			detail = "; " + detail
		}
		scope.Log("%s: watching %v every %v using %s%s%s%s", pluginName,
			opts.kinds, opts.period, name, stateNote, detail, opts.exclude.note)
		if w.kern != nil {
			defer func() {
				scope.Log("%s: stopped: %s", pluginName, w.kern.summary())
			}()
		}

		w.run(ctx, scope, func(row *ordereddict.Dict) bool {
			select {
			case <-ctx.Done():
				return false
			case output_chan <- row:
				return true
			}
		})
	}()

	return output_chan
}

func (self NetstatWatchPlugin) Info(
	scope vfilter.Scope, type_map *vfilter.TypeMap) *vfilter.PluginInfo {
	return &vfilter.PluginInfo{
		Name: pluginName,
		Doc: "Watch the socket table below one second and emit a row when a " +
			"connection is added or removed, with the owning process.",
		ArgType: type_map.AddType(scope, &NetstatWatchArgs{}),
		// 1: has the state argument; 2: backend=ebpf, reconcile and
		// ring_size; 3: exclude_loopback, exclude_pids and
		// exclude_networks, and arguments given as `**`=dict(...) (before
		// 3, the defaults-true switches ignored them).
		// version(plugin="netstat_watch") lets an artifact pass them only
		// to clients that know them (an unknown argument fails the query).
		Version:  3,
		Metadata: vql_subsystem.VQLMetadata().Permissions(acls.MACHINE_STATE).Build(),
	}
}

func init() {
	vql_subsystem.RegisterPlugin(&NetstatWatchPlugin{})
}
