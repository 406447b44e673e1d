//go:build linux

package netstat_watch

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
)

// Without root the plugin still reports every socket, with Pid -1 where the
// owner cannot be seen, and says so once, not once per tick.
func TestNotRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the plugin as another user")
	}
	bin := testutil.WorldReadableTestBinary(t, "netstat_watch.test")

	ln, err := net.Listen("tcp4", "127.0.0.1:0") // owned by root
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rootPort := ln.Addr().(*net.TCPAddr).Port

	cmd := exec.Command(bin, "SELECT * FROM netstat_watch(period=0.1, emit_existing=TRUE, kinds='tcp')")
	cmd.Env = append(os.Environ(), "NETWATCH_HELPER=watch")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var ownPort int
	pids := map[int]string{}
	warnings := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "OWN":
			ownPort, _ = strconv.Atoi(f[1])
		case len(f) == 3 && f[0] == "ROW":
			port, _ := strconv.Atoi(f[2])
			pids[port] = f[1]
		case strings.Contains(line, "could not be inspected"):
			warnings++
		}
	}
	if pids[rootPort] != "-1" {
		t.Errorf("root's listener: Pid %q, want -1\n%s", pids[rootPort], out)
	}
	if pids[ownPort] != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("own listener: Pid %q, want %d\n%s", pids[ownPort], cmd.Process.Pid, out)
	}
	if warnings != 1 {
		t.Errorf("want exactly one warning about uninspectable processes, got %d\n%s", warnings, out)
	}
}
