package watchstate

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/netwatch-dfir/netwatch/vql/collector"
	"github.com/netwatch-dfir/netwatch/vql/enricher"
	"github.com/netwatch-dfir/netwatch/vql/tracker"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func sample() *File {
	p := &enricher.Process{Pid: 100, Ppid: 1, Name: "curl", Exe: "/usr/bin/curl",
		CommandLine: "curl https://example.com", Username: "alice", UID: 1000,
		CreateTime: t0.Add(-time.Minute), StartTicks: 12345}
	sock := func(kind collector.Kind, l, r string, st collector.State, cookie, inode uint64) collector.Socket {
		s := collector.Socket{Family: collector.AF_INET, Type: collector.SOCK_STREAM, State: st,
			Local: netip.MustParseAddrPort(l), Remote: netip.MustParseAddrPort(r),
			Cookie: cookie, Inode: inode, UID: 1000, Pid: 100}
		if kind&(collector.TCP6|collector.UDP6) != 0 {
			s.Family = collector.AF_INET6
		}
		if kind&(collector.UDP4|collector.UDP6) != 0 {
			s.Type = collector.SOCK_DGRAM
		}
		return s
	}
	tw := sock(collector.TCP4, "127.0.0.1:40001", "127.0.0.1:80", collector.StateTimeWait, 1<<63+5, 0)
	tw.Orphan, tw.Pid = true, -1
	return &File{SavedAt: t0, Boot: "linux:0d5c1a8e-5e7a-4d2c-9b1e-1c2d3e4f5a6b",
		Kinds: collector.AllKinds, NextID: 9, Conns: []tracker.Saved{
			{ID: 3, Socket: sock(collector.TCP4, "127.0.0.1:40000", "127.0.0.1:80", collector.StateEstablished, 2, 20),
				Pid: 100, Direction: tracker.Outbound, FirstSeen: t0.Add(-time.Second), Info: p},
			{ID: 4, Socket: sock(collector.TCP6, "[::1]:80", "[::1]:40002", collector.StateEstablished, 3, 30),
				Pid: 100, Direction: tracker.Inbound, FirstSeen: t0, Info: p},
			{ID: 7, Socket: sock(collector.UDP6, "[fe80::1%eth0]:5353", "[::]:0", collector.StateClose, 0, 40),
				Pid: 100, Direction: tracker.Listen, FirstSeen: t0},
			{Socket: tw, Pid: -1, Direction: tracker.Unknown, FirstSeen: t0, Closed: true},
		}}
}

// mustEncode is the file WriteFile writes, in memory (the fuzz targets
// encode every input that parses).
func mustEncode(t testing.TB, f *File) []byte {
	body, err := appendBody(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	return append(append(header(body), body...), '\n')
}

// withHeader frames a body as a state file, correct length and checksum.
func withHeader(body string) []byte {
	return fmt.Appendf(nil, "%s %d %d %08x\n%s\n", magic, version, len(body),
		crc32.ChecksumIEEE([]byte(body)), body)
}

func TestRoundTrip(t *testing.T) {
	f := sample()
	got, err := parse(mustEncode(t, f))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, f) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, f)
	}
	// One process, listed once.
	if n := strings.Count(string(mustEncode(t, f)), `"cmdline"`); n != 1 {
		t.Errorf("process listed %d times", n)
	}
	empty := &File{SavedAt: t0, Boot: "b", Kinds: collector.TCP4, Conns: []tracker.Saved{}}
	if got, err := parse(mustEncode(t, empty)); err != nil || !reflect.DeepEqual(got, empty) {
		t.Errorf("empty: %+v, %v", got, err)
	}
}

func TestParseErrors(t *testing.T) {
	good := mustEncode(t, sample())
	_, body, _ := strings.Cut(strings.TrimSuffix(string(good), "\n"), "\n")
	edit := func(old, new string) []byte {
		if !strings.Contains(body, old) {
			t.Fatalf("sample has no %q", old)
		}
		return withHeader(strings.Replace(body, old, new, 1))
	}
	flip := append([]byte(nil), good...)
	flip[len(flip)-10] ^= 1
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "no header"},
		{"foreign", []byte("Client:\n  writeback_linux: /etc/x\n"), "not a netstat_watch"},
		{"other magic", []byte("netwatch-state 1 2 00000000\n{}\n"), "not a netstat_watch"},
		{"version 2", []byte(strings.Replace(string(good), magic+" 1 ", magic+" 2 ", 1)), "version"},
		{"truncated", good[:len(good)-20], "truncated"},
		{"truncated newline", good[:len(good)-1], "truncated"},
		{"extended", append(append([]byte(nil), good...), "x\n"...), "truncated or extended"},
		{"bit flip", flip, "checksum"},
		{"bad length", []byte(magic + " 1 x 00000000\n\n"), "length"},
		{"bad checksum field", []byte(magic + " 1 0 xyz\n\n"), "checksum"},
		{"not json", withHeader("nope"), "body"},
		{"unknown field", edit(`"boot":`, `"x":1,"boot":`), "unknown field"},
		{"trailing", withHeader(body + " {}"), "after the JSON"},
		{"no saved", edit(`"saved":"2026-11-27T10:00:00Z"`, `"saved":"0001-01-01T00:00:00Z"`), "saved"},
		{"no boot", edit(`"boot":"linux:0d5c1a8e-5e7a-4d2c-9b1e-1c2d3e4f5a6b"`, `"boot":""`), "boot"},
		{"no kinds", edit(`"kinds":"tcp,tcp6,udp,udp6"`, `"kinds":""`), "kinds"},
		{"bad kinds", edit(`"kinds":"tcp,tcp6,udp,udp6"`, `"kinds":"tcp,sctp"`), "sctp"},
		{"bad conn kind", edit(`"kind":"tcp"`, `"kind":"raw"`), "kind"},
		{"bad local", edit(`"local":"127.0.0.1:40000"`, `"local":"127.0.0.1"`), "local"},
		{"bad remote", edit(`"remote":"127.0.0.1:80"`, `"remote":"300.0.0.1:80"`), "remote"},
		{"bad state", edit(`"state":1,`, `"state":13,`), "state"},
		{"bad direction", edit(`"direction":"outbound"`, `"direction":"sideways"`), "direction"},
		{"bad pid", edit(`"pid":100,"direction"`, `"pid":-2,"direction"`), "pid"},
		{"no first_seen", edit(`"first_seen":"2026-11-27T09:59:59Z"`, `"first_seen":"0001-01-01T00:00:00Z"`), "first_seen"},
		{"open without id", edit(`"id":3,`, `"id":0,`), "without id"},
		{"id twice", edit(`"id":4,`, `"id":3,`), "twice"},
		{"id above next_id", edit(`"next_id":9`, `"next_id":5`), "above next_id"},
		{"proc out of range", edit(`"proc":1`, `"proc":2`), "proc 2"},
		{"proc negative", edit(`"proc":1`, `"proc":-1`), "proc -1"},
		{"proc bad pid", edit(`"pid":100,"ppid":1`, `"pid":0,"ppid":1`), "procs[0]"},
		{"cookie overflow", edit(`"cookie":2,`, `"cookie":18446744073709551616,`), "body"},
		{"wrong type", edit(`"next_id":9`, `"next_id":"9"`), "body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parse(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %+v, %v; want an error with %q", f, err, tc.want)
			}
		})
	}
}

func TestWriteLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if _, err := Load(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := sample()
	if _, err := WriteFile(path, f, nil); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", st.Mode(), err)
	}
	got, err := Load(path)
	if err != nil || !reflect.DeepEqual(got, f) {
		t.Errorf("Load: %+v, %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
	// A directory that does not exist: an error, no panic, nothing written.
	if _, err := WriteFile(filepath.Join(dir, "no", "state"), f, nil); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	// Too large to be ours.
	big := filepath.Join(dir, "big")
	fh, _ := os.Create(big)
	fh.Truncate(MaxSize + 1)
	fh.Close()
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Errorf("big file: %v", err)
	}
}

func TestSameBoot(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"linux:x", "linux:x", true},
		{"linux:x", "linux:y", false},
		{"", "", false},
		{"boottime:100", "boottime:102", true},
		{"boottime:100", "boottime:97", false},
		{"boottime:100", "linux:100", false},
		{"boottime:x", "boottime:y", false},
	} {
		if got := SameBoot(tc.a, tc.b); got != tc.want {
			t.Errorf("SameBoot(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
	if id := BootID(); id == "" || !SameBoot(id, BootID()) {
		t.Errorf("BootID() = %q, not the same boot as itself", id)
	}
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz/FuzzParse")

// TestWriteSeeds writes the seed corpus of FuzzParse:
//
//	go test -run TestWriteSeeds -write-seeds ./vql/watchstate/
func TestWriteSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("run with -write-seeds to rewrite testdata/fuzz/FuzzParse")
	}
	good := mustEncode(t, sample())
	empty := mustEncode(t, &File{SavedAt: t0, Boot: "boottime:1700000000", Kinds: collector.TCP4 | collector.UDP6})
	seeds := map[string][]byte{
		"sample":    good,
		"empty":     empty,
		"truncated": good[:len(good)/2],
		"foreign":   []byte("Client:\n  writeback_linux: /etc/velociraptor.writeback.yaml\n"),
		"json_only": good[strings.IndexByte(string(good), '\n')+1:],
	}
	write := func(target string, seeds map[string][]byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("FuzzParse", seeds)
	bodies := map[string][]byte{}
	for _, name := range []string{"sample", "empty"} {
		_, body, _ := strings.Cut(strings.TrimSuffix(string(seeds[name]), "\n"), "\n")
		bodies[name] = []byte(body)
	}
	bodies["null"] = []byte("null")
	bodies["conn_types"] = []byte(`{"saved":"2026-11-27T10:00:00+01:00","boot":"b","kinds":"udp6","next_id":1,` +
		`"procs":[],"conns":[{"id":1,"kind":"udp6","local":"[::ffff:127.0.0.1]:53","remote":"","state":7,` +
		`"uid":0,"pid":-1,"direction":"unknown","first_seen":"2026-11-27T10:00:00-05:00"}]}`)
	write("FuzzParseBody", bodies)
}

// Whatever the bytes: no panic, and what parses encodes back to the same.
func FuzzParse(f *testing.F) {
	f.Add(mustEncode(f, sample()))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parse(b)
		if err != nil {
			return
		}
		checkRoundTrip(t, st)
	})
}

// The checksum keeps random bytes out of the JSON: fuzz the body behind a
// valid header too.
func FuzzParseBody(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 1<<20 {
			return
		}
		st, err := parse(withHeader(string(body)))
		if err != nil {
			return
		}
		checkRoundTrip(t, st)
	})
}

// checkRoundTrip: whatever parses encodes to the same state again.
func checkRoundTrip(t *testing.T, st *File) {
	t.Helper()
	again, err := parse(mustEncode(t, st))
	if err != nil {
		t.Fatalf("re-encoded state does not parse: %v", err)
	}
	if !reflect.DeepEqual(again, st) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", again, st)
	}
}

// appendConn writes what json.Marshal writes for the same connJSON, byte
// for byte, including a direction that needs escaping.
func TestAppendConnMatchesMarshal(t *testing.T) {
	conns := sample().Conns
	odd := conns[0]
	odd.Direction = "<out\"bound>\n"
	odd.FirstSeen = time.Date(2026, 11, 27, 9, 0, 0, 123456789, time.FixedZone("x", 3600))
	for i, c := range append(conns, odd) {
		s := &c.Socket
		cj := connJSON{ID: c.ID, Kind: s.Kind().String(), Local: addrPortString(s.Local),
			Remote: addrPortString(s.Remote), State: uint8(s.State), Cookie: s.Cookie,
			Inode: s.Inode, UID: s.UID, Orphan: s.Orphan, Pid: c.Pid,
			Direction: string(c.Direction), FirstSeen: c.FirstSeen.UTC(), Closed: c.Closed, Proc: i % 2}
		want, err := json.Marshal(&cj)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendConn(nil, &c, i%2); string(got) != string(want) {
			t.Errorf("conn %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// Writing a state allocates little beyond its buffer, once it has grown:
// it happens every few seconds on hosts with tens of thousands of sockets.
func TestWriteFileReusesItsBuffer(t *testing.T) {
	f := sample()
	for len(f.Conns) < 2000 {
		c := f.Conns[len(f.Conns)%2] // TCP ones (a zone costs a string)
		c.ID = uint64(len(f.Conns) + 100)
		c.Socket.Cookie, c.Socket.Inode = c.ID, c.ID
		f.Conns = append(f.Conns, c)
	}
	f.NextID = 1 << 20
	path := filepath.Join(t.TempDir(), "state")
	buf, err := WriteFile(path, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(5, func() {
		if buf, err = WriteFile(path, f, buf); err != nil {
			t.Fatal(err)
		}
	})
	// The file, the header, the map of processes: not one per connection.
	if allocs > 100 {
		t.Errorf("%.0f allocations to write %d connections", allocs, len(f.Conns))
	}
	if got, err := Load(path); err != nil || len(got.Conns) != len(f.Conns) {
		t.Errorf("written state: %v, %v", err, got)
	}
}
