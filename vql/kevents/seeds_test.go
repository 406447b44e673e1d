package kevents

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz/FuzzParse")

// TestWriteSeeds writes the records of the parser tests as FuzzParse's
// seed corpus:
//
//	go test -run TestWriteSeeds -write-seeds
func TestWriteSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("run with -write-seeds to rewrite testdata/fuzz/FuzzParse")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"connect_v4": connRecord(connect),
		"accept_v6":  connRecord(accept6),
		"exec":       execRecord(execEv),
		"truncated":  connRecord(connect)[:50],
	} {
		seed := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), seed, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
