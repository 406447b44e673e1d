//go:build linux

package collector

import (
	"net"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
)

// inNetns runs fn on a thread inside the namespace at path, as a container's
// process would; the sockets fn opens stay in that namespace.
func inNetns(t *testing.T, path string, fn func()) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A connection inside another network namespace: Namespaces finds the
// namespace, CollectNetns sees its sockets (and the watcher's own table
// does not), and the caller's thread never leaves its namespace.
func TestCollectNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (setns), as make test runs")
	}
	name, ino := testutil.Netns(t, "nwcol")
	own := selfNetns(t)

	var ln net.Listener
	var cli net.Conn
	inNetns(t, "/run/netns/"+name, func() {
		var err error
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			t.Error(err)
			return
		}
		if cli, err = net.Dial("tcp4", ln.Addr().String()); err != nil {
			t.Error(err)
		}
	})
	if t.Failed() {
		return
	}
	defer ln.Close()
	defer cli.Close()
	port := addrPort(cli.LocalAddr())

	ns := listed(t, own, ino)

	socks, err := CollectNetns(*ns, TCP4, nil)
	if err != nil {
		t.Fatal(err)
	}
	found := func(socks []Socket) bool {
		for _, s := range socks {
			if s.Local == port && s.State == StateEstablished && s.Cookie != 0 && s.Inode != 0 {
				return true
			}
		}
		return false
	}
	if !found(socks) {
		t.Errorf("the namespace's connection from %v is not in its snapshot (%d sockets)", port, len(socks))
	}
	if got := selfNetns(t); got != own {
		t.Errorf("the caller's thread is in namespace %d after CollectNetns, was %d", got, own)
	}
	c, err := New("netlink")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mine, err := c.Collect(TCP4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if found(mine) {
		// Other sockets can share the port number; the cookie cannot.
		for _, a := range socks {
			for _, b := range mine {
				if a.Cookie == b.Cookie && a.Local == port {
					t.Errorf("the watcher's own table has the namespace's socket %d", a.Cookie)
				}
			}
		}
	}

	// A path that now names another namespace is refused, not read.
	if _, err := CollectNetns(Netns{Inode: ino + 1, Path: ns.Path}, TCP4, nil); err == nil {
		t.Error("CollectNetns read a namespace other than the one asked for")
	}
}

func selfNetns(t *testing.T) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

// Reading another namespace leaves no thread of this process in it, and
// does not end a thread per read (a thread that ends takes its CPU time
// out of /proc/PID/task, and costs a clone to replace).
func TestCollectNetnsRestoresThreads(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (setns), as make test runs")
	}
	_, ino := testutil.Netns(t, "nwthr")
	own := selfNetns(t)
	ns := listed(t, own, ino)
	tasks := func() map[string]uint64 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]uint64{}
		for _, e := range ents {
			var st unix.Stat_t
			if unix.Stat("/proc/self/task/"+e.Name()+"/ns/net", &st) == nil {
				out[e.Name()] = st.Ino
			}
		}
		return out
	}
	before := tasks()
	const reads = 50
	for range reads {
		if _, err := CollectNetns(*ns, TCP4, nil); err != nil {
			t.Fatal(err)
		}
	}
	after := tasks()
	for tid, n := range after {
		// (Other tests' helpers may still be ending a thread of theirs
		// in their own namespaces.)
		if n == uint64(ino) {
			t.Errorf("thread %s left in namespace %d", tid, n)
		}
	}
	ended := 0
	for tid := range before {
		if _, ok := after[tid]; !ok {
			ended++
		}
	}
	// The runtime may start or retire a thread or two of its own meanwhile.
	if ended > 2 || len(after) > len(before)+4 {
		t.Errorf("%d reads: %d threads before, %d after, %d of them ended", reads, len(before), len(after), ended)
	}
}

// listed is namespace ino as Namespaces lists it from /proc, which must not
// list own.
func listed(t *testing.T, own, ino uint32) *Netns {
	t.Helper()
	nss, err := Namespaces("/proc", own)
	if err != nil {
		t.Fatal(err)
	}
	var ns *Netns
	for i := range nss {
		if nss[i].Inode == own {
			t.Errorf("own namespace %d listed", own)
		}
		if nss[i].Inode == ino {
			ns = &nss[i]
		}
	}
	if ns == nil {
		t.Fatalf("namespace %d not in %v", ino, nss)
	}
	return ns
}
