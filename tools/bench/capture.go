//go:build linux

package main

import (
	"encoding/json"
	"sort"
	"time"
)

// Launched is one child process and its connection.
type Launched struct {
	Pid      int
	Port     int    // the child's local port
	RPort    int    // the remote port of the child's socket
	Netns    uint64 // inode of its network namespace (0: the harness's own)
	Dir      string `json:",omitempty"` // kpace: "out" (the child connected) or "in" (it accepted)
	Name     string // the child's process name (comm)
	Lifetime time.Duration
	Launched time.Time // before fork: earlier than the connection
	Exited   time.Time
}

// ConnResult is what one method reported about one launched connection.
type ConnResult struct {
	Method      string
	Run         int
	LifeMS      int
	Pid         int
	Port        int
	Name        string
	Dir         string `json:",omitempty"` // kpace: "out" or "in"
	Netns       string `json:",omitempty"` // kpace: "host" or "second"
	Added       int    // "added" rows matched to this connection
	RightPid    bool   // one of them had the child's Pid
	RightName   bool   // one of them had the child's Pid and process Name
	OnceRight   bool   // exactly one added row, with the right Pid and Name
	FirstPid    int    // Pid of the first added row
	FirstStatus string // Status of the first added row
	FirstName   string // ProcInfo.Data.Name of the first added row
	// Reused: a later connection of the same run got the same local port
	// (tcp_tw_reuse=2 recycles loopback TIME_WAIT sockets after 1 s), so
	// this one's TIME_WAIT remnant may have gone before a poll saw it.
	Reused bool
}

// Row is the part of a netstat_watch() / diff(netstat()) row the matcher
// reads; both have netstat()'s column names.
type Row struct {
	Diff       string
	Timestamp  time.Time
	Pid        int64
	Type       int
	TypeString string
	Laddr      Addr
	Raddr      Addr
	Status     string
	Netns      uint64 // netstat_watch only: the socket's network namespace
	ProcInfo   *struct {
		Data *struct {
			Name string
		}
	}
}

type Addr struct {
	IP   string
	Port int
}

// ParsedRow is a row and when it was observed: the row's Timestamp where the
// method sets one (netstat_watch), else when the harness read it (netstat()
// rows carry a zero Timestamp on Linux).
type ParsedRow struct {
	Row
	Observed time.Time
}

func (r *Row) procName() string {
	if r.ProcInfo == nil || r.ProcInfo.Data == nil {
		return ""
	}
	return r.ProcInfo.Data.Name
}

// parseRows decodes jsonl output; lines that are not rows are skipped.
func parseRows(lines []Arrival) (rows []ParsedRow, bad int) {
	for _, a := range lines {
		var r Row
		if err := json.Unmarshal(a.Line, &r); err != nil || r.Diff == "" {
			bad++
			continue
		}
		obs := r.Timestamp
		if obs.Year() < 2000 {
			obs = a.At
		}
		rows = append(rows, ParsedRow{r, obs})
	}
	return rows, bad
}

// matchCapture scores the capture figure's children: each connected from
// its local port to the harness's listener on listenPort, in the harness's
// own network namespace, hostNS.
func matchCapture(launched []Launched, lines []Arrival, listenPort int, hostNS uint64) []ConnResult {
	for i := range launched {
		launched[i].RPort = listenPort
	}
	return matchConns(launched, lines, hostNS)
}

// matchConns assigns every "added" TCP row on 127.0.0.1 to the launched
// connection with the same namespace and ports that was launched last
// before the row was observed (a port can come back after its TIME_WAIT),
// and scores each connection. A row without a Netns column (diff(netstat()))
// or a connection without one is in hostNS.
func matchConns(launched []Launched, lines []Arrival, hostNS uint64) []ConnResult {
	type key struct {
		ns          uint64
		local, peer int
	}
	nsOr := func(ns uint64) uint64 {
		if ns == 0 {
			return hostNS
		}
		return ns
	}
	rows, _ := parseRows(lines)
	byKey := map[key][]int{}
	for i, l := range launched {
		k := key{nsOr(l.Netns), l.Port, l.RPort}
		byKey[k] = append(byKey[k], i)
	}
	for _, idx := range byKey {
		sort.Slice(idx, func(a, b int) bool { return launched[idx[a]].Launched.Before(launched[idx[b]].Launched) })
	}
	matched := make([][]ParsedRow, len(launched))
	for _, r := range rows {
		if r.Diff != "added" || !(r.Type == 1 || r.TypeString == "TCP") ||
			r.Laddr.IP != "127.0.0.1" || r.Raddr.IP != "127.0.0.1" {
			continue
		}
		best := -1
		for _, i := range byKey[key{nsOr(r.Netns), r.Laddr.Port, r.Raddr.Port}] {
			if !launched[i].Launched.After(r.Observed) {
				best = i
			}
		}
		if best >= 0 {
			matched[best] = append(matched[best], r)
		}
	}
	out := make([]ConnResult, len(launched))
	for i, l := range launched {
		c := ConnResult{LifeMS: int(l.Lifetime / time.Millisecond), Pid: l.Pid, Port: l.Port,
			Name: l.Name, Dir: l.Dir, Added: len(matched[i])}
		for j, r := range matched[i] {
			if j == 0 {
				c.FirstPid, c.FirstStatus, c.FirstName = int(r.Pid), r.Status, r.procName()
			}
			if int(r.Pid) == l.Pid {
				c.RightPid = true
				if r.procName() == l.Name {
					c.RightName = true
				}
			}
		}
		c.OnceRight = c.Added == 1 && c.RightName
		out[i] = c
	}
	markReused(out)
	return out
}

// markReused flags the connections whose local port a later connection of
// the same method and run got; cs is in launch order.
func markReused(cs []ConnResult) {
	type runPort struct {
		method    string
		run, port int
	}
	seen := map[runPort]bool{}
	for i := len(cs) - 1; i >= 0; i-- {
		k := runPort{cs[i].Method, cs[i].Run, cs[i].Port}
		cs[i].Reused = cs[i].Reused || seen[k]
		seen[k] = true
	}
}

type connSummary struct {
	N, Reported, RightPid, RightName, OnceRight, Dups, Multi, Orphan, Reused int
}

func summarizeConns(cs []ConnResult) connSummary {
	var s connSummary
	for _, c := range cs {
		s.N++
		if c.Added > 0 {
			s.Reported++
			s.Dups += c.Added - 1
			if c.Added > 1 {
				s.Multi++
			}
			if c.FirstPid <= 0 {
				s.Orphan++
			}
		}
		if c.RightPid {
			s.RightPid++
		}
		if c.RightName {
			s.RightName++
		}
		if c.OnceRight {
			s.OnceRight++
		}
		if c.Reused {
			s.Reused++
		}
	}
	return s
}
