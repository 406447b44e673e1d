package netstat_watch

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/Velocidex/ordereddict"
)

// existingRows is "diff offline=.. existing=.." for each row about the
// connection from local port port to the server srv. The remote port
// counts too: the kernel hands a port out again while a TIME_WAIT
// remnant of another connection still holds it.
func existingRows(rows []*ordereddict.Dict, port, srv uint32) []string {
	var out []string
	for _, r := range rows {
		if get(r, "Laddr.Port") == port && get(r, "Raddr.Port") == srv {
			out = append(out, fmt.Sprintf("%v offline=%v existing=%v",
				get(r, "Diff"), get(r, "Offline"), get(r, "Existing")))
		}
	}
	return out
}

// emit_existing reports what is open at a first start as Existing, and only
// there: a start that resumes a state reports what changed meanwhile as
// Offline, and nothing already reported again.
func TestExistingOnFirstStartOnly(t *testing.T) {
	ln := loopbackServer(t)
	srv := uint32(ln.Addr().(*net.TCPAddr).Port)
	state := filepath.Join(t.TempDir(), "netstat_watch.state")
	query := "SELECT * FROM netstat_watch(period=0.05, kinds='tcp', emit_existing=TRUE, state='" + state + "')"

	// X is open before the first start.
	_, x := holdingChild(t, ln.Addr().String())

	// Run 1: X is Existing; Y, opened while watched, is not.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, logs, ended := watchWith(t, ctx, trustAtOnce, query)
	// Y opens once X's row shows that the first snapshot is taken (the
	// watcher's start takes longer than any fixed sleep on a loaded host).
	var y uint32
	var got []*ordereddict.Dict
	for row := range rows {
		if p := get(row, "Laddr.Port"); p == x || y != 0 && p == y {
			got = append(got, row)
			if y != 0 && len(existingRows(got, y, srv)) > 0 {
				break
			}
		}
		if y == 0 && len(existingRows(got, x, srv)) > 0 {
			_, y = holdingChild(t, ln.Addr().String())
		}
	}
	cancel()
	for range rows {
	}
	waitPluginEnd(t, ended)
	if r := existingRows(got, x, srv); len(r) != 1 || r[0] != "added offline=false existing=true" {
		t.Errorf("X, open before the first start: %v, want one added existing\nlogs: %s", r, logs)
	}
	if r := existingRows(got, y, srv); len(r) != 1 || r[0] != "added offline=false existing=false" {
		t.Errorf("Y, opened while watched: %v, want one added, not existing\nlogs: %s", r, logs)
	}

	// Down time: W opens. Run 2 resumes the state: W is Offline, X and Y
	// are not reported again.
	_, w := holdingChild(t, ln.Addr().String())
	time.Sleep(100 * time.Millisecond)
	got, logs = runWatch(t, trustAtOnce, query, map[uint32]bool{x: true, y: true, w: true},
		func(r []*ordereddict.Dict) bool { return len(existingRows(r, w, srv)) > 0 }, 10*time.Second)
	if r := existingRows(got, w, srv); len(r) != 1 || r[0] != "added offline=true existing=false" {
		t.Errorf("W, opened while down: %v, want one added offline\nlogs: %s", r, logs)
	}
	if r := append(existingRows(got, x, srv), existingRows(got, y, srv)...); r != nil {
		t.Errorf("X or Y reported again after a resumed start: %v", r)
	}
}
