package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o600, 0o640} {
		if err := Write(path, mode, []byte("new "), []byte("content")); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != "new content" {
			t.Errorf("read back %q, %v", b, err)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != mode {
			t.Errorf("mode %v, %v; want %v", st.Mode(), err, mode)
		}
	}
	// A directory that does not exist: an error, nothing left behind.
	if err := Write(filepath.Join(dir, "no", "f"), 0o600, []byte("x")); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	// The target is a directory: the rename fails and the temporary file
	// is removed.
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "d"), 0o600, []byte("x")); err == nil {
		t.Error("write over a directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("want only f and d in the directory, got %v", entries)
	}
}
