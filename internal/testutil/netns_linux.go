package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// Netns creates a network namespace with loopback up, named after prefix
// and this process, deleted when the test ends, and returns its name and
// inode (the number kernel events and /proc/<pid>/ns/net report).
func Netns(t *testing.T, prefix string) (string, uint32) {
	t.Helper()
	name := fmt.Sprintf("%s%d", prefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+name, &st); err != nil {
		t.Fatal(err)
	}
	return name, uint32(st.Ino)
}
