//go:build linux

package collector

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace, by its inode (the number kernel events and
// /proc/<pid>/ns/net report) and a path that opens it.
type Netns struct {
	Inode uint32
	Path  string // /proc/<pid>/ns/net of a process in it, or a bind mount
}

// Namespaces lists the network namespaces other than own that running
// processes are in (a container, a pod) or that `ip netns` keeps under
// /run/netns, each once. A namespace with neither can hold no socket but
// TIME_WAIT remnants.
func Namespaces(procRoot string, own uint32) ([]Netns, error) {
	seen := map[uint32]bool{own: true}
	var out []Netns
	add := func(path string) {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil {
			return // gone, or not ours to look at
		}
		ino := uint32(st.Ino)
		if !seen[ino] {
			seen[ino] = true
			out = append(out, Netns{Inode: ino, Path: path})
		}
	}
	if mounts, err := filepath.Glob("/run/netns/*"); err == nil {
		for _, m := range mounts {
			add(m)
		}
	}
	d, err := os.Open(procRoot)
	if err != nil {
		return out, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return out, err
	}
	for _, n := range names {
		if _, err := strconv.ParseUint(n, 10, 31); err == nil {
			add(filepath.Join(procRoot, n, "ns", "net"))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Inode < out[j].Inode })
	return out, nil
}

// CollectNetns is Collect in another network namespace, with sock_diag.
// Nothing of the namespace is kept past the call (the netlink socket holds
// it alive), so a container that ends is freed as usual. The socket is made
// by a thread of its own that enters the namespace and is then discarded:
// the caller's threads never change namespace.
func CollectNetns(ns Netns, kinds Kind, dst []Socket) ([]Socket, error) {
	f, err := os.Open(ns.Path)
	if err != nil {
		return dst, fmt.Errorf("netns %d: %w", ns.Inode, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return dst, fmt.Errorf("netns %d: %w", ns.Inode, err)
	}
	if uint32(st.Ino) != ns.Inode {
		// The process left, and its pid now names another one.
		return dst, fmt.Errorf("netns %d: %s is now namespace %d", ns.Inode, ns.Path, st.Ino)
	}
	c := &netlinkCollector{fd: -1, buf: make([]byte, nlRecvBufLen), netns: f}
	defer c.Close()
	return c.Collect(kinds, dst)
}

// socketIn opens a sock_diag socket in the namespace of f. setns changes
// only the calling thread, so a goroutine locks one, enters, opens, and
// enters its own namespace again before unlocking. Should that return
// fail, it exits still locked: the runtime then ends the thread rather than
// reuse it in the wrong namespace. (Ending one every round was the first
// design: a thread that has run other goroutines takes its CPU time out of
// /proc/PID/task with it, and creating one per namespace per round costs a
// clone each time.)
func socketIn(f *os.File) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread() // unchanged: reusable
			ch <- result{-1, fmt.Errorf("own network namespace: %w", err)}
			return
		}
		defer own.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("setns: %w", err)}
			return
		}
		fd, err := sockDiag()
		ch <- result{fd, err}
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	r := <-ch
	return r.fd, r.err
}
