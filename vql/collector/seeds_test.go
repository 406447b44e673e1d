package collector

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var writeSeeds = flag.Bool("write-seeds", false, "rewrite the synthetic seed corpora of FuzzParseMibTable and FuzzParsePcbList in testdata/fuzz")

// TestWriteSeeds writes the fixtures of the Windows and macOS parser tests
// as seed corpora, next to the tables captured live:
//
//	go test -run TestWriteSeeds -write-seeds
func TestWriteSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("run with -write-seeds to rewrite testdata/fuzz/*/synthetic_*")
	}
	mib := func(name string, b []byte, v6, udp bool) {
		writeSeed(t, "FuzzParseMibTable", name, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\nbool(%v)\nbool(%v)\n", b, v6, udp))
	}
	mib("synthetic_tcp", mibTable(AF_INET, SOCK_STREAM, winTCP...), false, false)
	mib("synthetic_tcp6", mibTable(AF_INET6, SOCK_STREAM, winTCP6...), true, false)
	mib("synthetic_udp", mibTable(AF_INET, SOCK_DGRAM, winUDP...), false, true)
	mib("synthetic_udp6", mibTable(AF_INET6, SOCK_DGRAM, winUDP6...), true, true)
	tcp := mibTable(AF_INET, SOCK_STREAM, winTCP...)
	mib("synthetic_truncated", tcp[:len(tcp)-5], false, false)

	pcbs := func(name string, b []byte, udp bool) {
		writeSeed(t, "FuzzParsePcbList", name, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\nbool(%v)\n", b, udp))
	}
	pcbs("synthetic_tcp", pcbList(SOCK_STREAM, 100, macTCP...), false)
	pcbs("synthetic_udp", pcbList(SOCK_DGRAM, 100, macUDP...), true)
	pcbs("synthetic_empty", pcbList(SOCK_STREAM, 1), false)
	list := pcbList(SOCK_STREAM, 100, macTCP[:3]...)
	pcbs("synthetic_truncated", list[:len(list)-xinpgenLen-3], false)
}

func writeSeed(t *testing.T, target, name string, b []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
