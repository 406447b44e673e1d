// Package atomicfile replaces files so that a reader, or a process started
// after a crash, sees the old content or the new, never a part.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces the file at path with the concatenation of parts, created
// with mode: written to a temporary file in the same directory, synced, then
// renamed over path. The temporary file is removed on failure.
func Write(path string, mode os.FileMode, parts ...[]byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*") // mode 0600
	if err != nil {
		return err
	}
	name := tmp.Name()
	for _, p := range parts {
		if err == nil {
			_, err = tmp.Write(p)
		}
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && mode != 0o600 {
		err = os.Chmod(name, mode)
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		os.Remove(name)
	}
	return err
}
