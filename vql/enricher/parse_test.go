package enricher

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// statLine formats a /proc/<pid>/stat line as the kernel does.
func statLine(pid int, comm string, ppid int32, start uint64) string {
	return fmt.Sprintf("%d (%s) S %d %d %d 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 %d 3133440 389 18446744073709551615 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
		pid, comm, ppid, pid, pid, start)
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		comm  string
		ppid  int32
		start uint64
		ok    bool
	}{
		{"plain", statLine(17008, "cat", 17005, 78393), "cat", 17005, 78393, true},
		{"parens", statLine(2, "(sd-pam)", 1, 5), "(sd-pam)", 1, 5, true},
		{"unbalanced", statLine(2, "a) b (c", 1, 5), "a) b (c", 1, 5, true},
		{"close paren last", statLine(2, "x) S 9 9 9", 1, 5), "x) S 9 9 9", 1, 5, true},
		{"spaces", statLine(2, "Web Content", 1, 5), "Web Content", 1, 5, true},
		{"newline", statLine(2, "a\nb", 1, 5), "a\nb", 1, 5, true},
		{"empty comm", statLine(2, "", 0, 0), "", 0, 0, true},
		{"max values", statLine(2, "x", 1<<31-1, 1<<64-1), "x", 1<<31 - 1, 1<<64 - 1, true},
		{"no newline", strings.TrimSuffix(statLine(2, "x", 1, 5), "\n"), "x", 1, 5, true},
		{"ends at start", "1 (init) S 0 1 1 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 42", "init", 0, 42, true},

		{"truncated", statLine(2, "x", 1, 5)[:40], "", 0, 0, false},
		{"no start", "1 (init) S 0 1 1 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0\n", "", 0, 0, false},
		{"empty start", "1 (init) S 0 1 1 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 \n", "", 0, 0, false},
		{"no close paren", "1 (init S 0 1 1", "", 0, 0, false},
		{"no open paren", "1 init) S 0 1 1", "", 0, 0, false},
		{"reversed parens", "1 )init( S 0 1", "", 0, 0, false},
		{"no space after comm", strings.Replace(statLine(2, "x", 1, 5), ") S", ")S", 1), "", 0, 0, false},
		{"double space", strings.Replace(statLine(2, "x", 1, 5), "S 1", "S  1", 1), "", 0, 0, false},
		{"ppid too big", "2 (x) S 2147483648 2 2 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0\n", "", 0, 0, false},
		{"negative ppid", "2 (x) S -1 2 2 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0\n", "", 0, 0, false},
		{"start overflows", "2 (x) S 1 2 2 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 18446744073709551616 0\n", "", 0, 0, false},
		{"empty", "", "", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			comm, ppid, start, err := parseStatString([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("parseStatString(%q): err = %v, want ok %v", tt.in, err, tt.ok)
			}
			if comm != tt.comm || ppid != tt.ppid || start != tt.start {
				t.Errorf("parseStatString(%q) = %q, %d, %d; want %q, %d, %d",
					tt.in, comm, ppid, start, tt.comm, tt.ppid, tt.start)
			}
		})
	}
}

func TestParseStatusUID(t *testing.T) {
	tests := []struct {
		in  string
		uid int32
		ok  bool
	}{
		{"Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n", 1000, true},
		{"Uid:\t0\t0\t0\t0\n", 0, true},
		{"Name:\tx\nUid:\t42\t42\t42\t42", 42, true}, // no final newline
		{"Uid: 7 7 7 7\n", 7, true},
		{"Uid:\t2147483647\t0\t0\t0\n", 1<<31 - 1, true},
		{"Name:\tUid:\t5\nUid:\t6\t6\t6\t6\n", 6, true}, // only at line start

		{"Uid:\t4294967295\t0\t0\t0\n", 0, false},
		{"Uid:\t-1\t0\t0\t0\n", 0, false},
		{"Uid:\tx\t0\t0\t0\n", 0, false},
		{"Uid:\n", 0, false},
		{"Gid:\t0\t0\t0\t0\n", 0, false},
		{"uid:\t0\n", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		uid, err := parseStatusUID([]byte(tt.in))
		if (err == nil) != tt.ok || uid != tt.uid {
			t.Errorf("parseStatusUID(%q) = %d, %v; want %d, ok %v", tt.in, uid, err, tt.uid, tt.ok)
		}
	}
}

func TestParseCmdline(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/bin/sleep\x005\x00", "/bin/sleep 5"},
		{"python3\x00-c\x00print('a b')\x00", "python3 -c print('a b')"},
		{"a\x00\x00b\x00", "a  b"},
		{"sshd: root@pts/0\x00\x00\x00\x00", "sshd: root@pts/0"},
		{"postgres: checkpointer", "postgres: checkpointer"},
		{"\x00\x00", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := parseCmdline([]byte(tt.in)); got != tt.want {
			t.Errorf("parseCmdline(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseBootTime(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"cpu  1 2 3\ncpu0 1 2 3\nintr 5\nctxt 9\nbtime 1795755929\nprocesses 7\n", 1795755929, true},
		{"cpu 1\nbtime 42", 42, true},
		{"btime 0\n", 0, true},
		{"btime\t42\n", 0, false},
		{"btime x\n", 0, false},
		{"btime -1\n", 0, false},
		{"btime 99999999999999999999\n", 0, false},
		{"xbtime 42\n", 0, false},
		{"cpu 1\n", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := parseBootTime([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("parseBootTime(%q): err = %v, want ok %v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && got.Unix() != tt.want {
			t.Errorf("parseBootTime(%q) = %v, want %v", tt.in, got, time.Unix(tt.want, 0))
		}
	}
}

func TestProcessName(t *testing.T) {
	tests := []struct{ comm, argv0, exe, want string }{
		{"bash", "-bash", "/usr/bin/bash", "bash"},
		{"sleep", "/bin/sleep", "/usr/bin/sleep", "sleep"},
		// Truncated by the kernel to 15 bytes.
		{"systemd-journal", "/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald", "systemd-journald"},
		{"gnome-session-b", "/usr/libexec/gnome-session-binary", "", "gnome-session-binary"},
		// argv[0] rewritten by the process: the executable names it.
		{"enricher-helper", "sleeping", "/tmp/x/enricher-helper-process", "enricher-helper-process"},
		// Renamed by prctl: neither matches.
		{"my-worker-threa", "/usr/bin/python3", "/usr/bin/python3.12", "my-worker-threa"},
		{"kworker/0:1H-kb", "", "", "kworker/0:1H-kb"},
		// Exactly 15 bytes and not truncated.
		{"ksoftirqd/12345", "", "", "ksoftirqd/12345"},
	}
	for _, tt := range tests {
		if got := processName(tt.comm, tt.argv0, tt.exe); got != tt.want {
			t.Errorf("processName(%q, %q, %q) = %q, want %q", tt.comm, tt.argv0, tt.exe, got, tt.want)
		}
	}
}

func TestLRU(t *testing.T) {
	c := newLRU(2)
	a, b, d := &Process{Pid: 1}, &Process{Pid: 2}, &Process{Pid: 3}
	c.add(key{1, 1}, a)
	c.add(key{2, 1}, b)
	if c.get(key{1, 1}) != a { // now most recent
		t.Fatal("lost an entry within the bound")
	}
	c.add(key{3, 1}, d)
	if c.get(key{2, 1}) != nil {
		t.Error("least recently used entry was kept")
	}
	if c.get(key{1, 1}) != a || c.get(key{3, 1}) != d {
		t.Error("recent entries were evicted")
	}
	if c.get(key{1, 2}) != nil {
		t.Error("entry returned for another start time")
	}
	if n := c.order.Len(); n != 2 || len(c.items) != 2 {
		t.Errorf("size = %d (map %d), want 2", n, len(c.items))
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(statLine(1, "a) b (c", 0, 5)))
	f.Fuzz(func(t *testing.T, b []byte) {
		comm, ppid, start, err := parseStatString(b)
		if err != nil {
			return
		}
		if !bytes.Contains(b, []byte("("+comm+")")) || ppid < 0 {
			t.Fatalf("parseStatString(%q) = %q, %d", b, comm, ppid)
		}
		comm2, ppid2, start2, err := parseStatString([]byte(statLine(1, comm, ppid, start)))
		if err != nil || comm2 != comm || ppid2 != ppid || start2 != start {
			t.Fatalf("round trip of %q, %d, %d: %q, %d, %d, %v", comm, ppid, start, comm2, ppid2, start2, err)
		}
	})
}

func FuzzParseStatusUID(f *testing.F) {
	f.Add([]byte("Uid:\t1000\t0\t0\t0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		uid, err := parseStatusUID(b)
		if err != nil {
			return
		}
		if uid < 0 {
			t.Fatalf("parseStatusUID(%q) = %d", b, uid)
		}
		if uid2, err := parseStatusUID(fmt.Appendf(nil, "Uid:\t%d\t0\t0\t0\n", uid)); err != nil || uid2 != uid {
			t.Fatalf("round trip of %d: %d, %v", uid, uid2, err)
		}
	})
}

func FuzzParseCmdline(f *testing.F) {
	f.Add([]byte("/bin/sleep\x005\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := parseCmdline(b)
		if strings.IndexByte(s, 0) >= 0 || len(s) != len(bytes.TrimRight(b, "\x00")) {
			t.Fatalf("parseCmdline(%q) = %q", b, s)
		}
	})
}

func FuzzParseBootTime(f *testing.F) {
	f.Add([]byte("btime 1795755929\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		bt, err := parseBootTime(b)
		if err != nil {
			return
		}
		if bt.Unix() < 0 {
			t.Fatalf("parseBootTime(%q) = %v", b, bt)
		}
		if bt2, err := parseBootTime(fmt.Appendf(nil, "btime %d\n", bt.Unix())); err != nil || !bt2.Equal(bt) {
			t.Fatalf("round trip of %v: %v, %v", bt, bt2, err)
		}
	})
}

// parseStatString is parseStat with its name as a string.
func parseStatString(b []byte) (comm string, ppid int32, startTicks uint64, err error) {
	c, ppid, startTicks, err := parseStat(b)
	return string(c), ppid, startTicks, err
}
