// Package testutil holds what several packages' tests need.
package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// WorldReadableTestBinary copies the running test binary into a folder any
// user can reach and returns its path, so that a test running as root can
// start it as another user (the go test cache is root's alone).
func WorldReadableTestBinary(t testing.TB, name string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, name)
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}
