package owner

import (
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// dirent is a linux_dirent64 record as getdents64(2) writes it: name, NUL,
// padded to 8 bytes.
func dirent(name string) []byte {
	reclen := (direntName + len(name) + 1 + 7) &^ 7
	b := make([]byte, reclen)
	binary.NativeEndian.PutUint64(b, 42) // d_ino
	binary.NativeEndian.PutUint16(b[direntReclen:], uint16(reclen))
	b[18] = unix.DT_DIR
	copy(b[direntName:], name)
	return b
}

func TestNextDirent(t *testing.T) {
	buf := append(append(dirent("."), dirent("1234")...), dirent("self")...)
	var names []string
	for len(buf) > 0 {
		name, rest, ok := nextDirent(buf)
		if !ok {
			t.Fatalf("record refused with %d bytes left", len(buf))
		}
		names = append(names, string(name))
		buf = rest
	}
	if got := names; len(got) != 3 || got[0] != ".\x00" || got[1] != "1234\x00" || got[2] != "self\x00" {
		t.Errorf("names %q", got)
	}

	bad := map[string][]byte{
		"empty":       nil,
		"header only": dirent("x")[:direntName],
		"reclen 0":    func() []byte { b := dirent("x"); b[direntReclen], b[direntReclen+1] = 0, 0; return b }(),
		"reclen past": func() []byte { b := dirent("x"); b[direntReclen] = 200; return b }(),
		"no name":     func() []byte { b := dirent("x"); b[direntName] = 0; return b }(),
		"no terminator": func() []byte {
			b := dirent("abcd")
			for i := direntName; i < len(b); i++ {
				b[i] = 'y'
			}
			return b
		}(),
		"reclen in name": func() []byte { b := dirent("x"); b[direntReclen], b[direntReclen+1] = direntName, 0; return b }(),
	}
	for what, b := range bad {
		if name, _, ok := nextDirent(b); ok {
			t.Errorf("%s: accepted, name %q", what, name)
		}
	}
}

func TestParseDirNumber(t *testing.T) {
	for _, tt := range []struct {
		in string
		n  int32
		ok bool
	}{
		{"1\x00", 1, true},
		{"0\x00", 0, true},
		{"4194304\x00", 4194304, true},
		{"2147483647\x00", 1<<31 - 1, true},
		{"2147483648\x00", 0, false},
		{"99999999999\x00", 0, false},
		{"00000000001\x00", 0, false}, // longer than any number below 2^31
		{"\x00", 0, false},
		{"", 0, false},
		{"12", 0, false}, // no terminator
		{"self\x00", 0, false},
		{".\x00", 0, false},
		{"-1\x00", 0, false},
		{"1 \x00", 0, false},
	} {
		n, ok := parseDirNumber([]byte(tt.in))
		if n != tt.n || ok != tt.ok {
			t.Errorf("parseDirNumber(%q) = %d, %v; want %d, %v", tt.in, n, ok, tt.n, tt.ok)
		}
	}
}

// The real /proc: every PID the kernel lists is parsed (as the owner scan
// reads it).
func TestDirentsOfProc(t *testing.T) {
	fd, err := unix.Open("/proc", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skip(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 32<<10)
	self := false
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n <= 0 {
			break
		}
		for b := buf[:n]; len(b) > 0; {
			name, rest, ok := nextDirent(b)
			if !ok {
				t.Fatalf("record refused: %q", b)
			}
			b = rest
			if pid, ok := parseDirNumber(name); ok && int(pid) == os.Getpid() {
				self = true
			}
		}
	}
	if !self {
		t.Error("this process's PID was not among /proc's entries")
	}
}

func FuzzNextDirent(f *testing.F) {
	f.Add(append(dirent("1234"), dirent("self")...))
	f.Fuzz(func(t *testing.T, buf []byte) {
		for len(buf) > 0 {
			name, rest, ok := nextDirent(buf)
			if !ok {
				return
			}
			if len(name) < 2 || name[len(name)-1] != 0 || bytes.IndexByte(name, 0) != len(name)-1 {
				t.Fatalf("name %q is not one NUL-terminated name", name)
			}
			if len(rest) >= len(buf) {
				t.Fatalf("no progress: %d bytes left of %d", len(rest), len(buf))
			}
			buf = rest
		}
	})
}

func FuzzParseDirNumber(f *testing.F) {
	f.Add([]byte("1234\x00"))
	f.Fuzz(func(t *testing.T, name []byte) {
		n, ok := parseDirNumber(name)
		if !ok {
			if n != 0 {
				t.Fatalf("parseDirNumber(%q) = %d with !ok", name, n)
			}
			return
		}
		digits := string(name[:len(name)-1])
		want, err := strconv.ParseInt(digits, 10, 32)
		if err != nil || int32(want) != n || n < 0 || digits[0] == '+' {
			t.Fatalf("parseDirNumber(%q) = %d; strconv says %d, %v", name, n, want, err)
		}
	})
}
