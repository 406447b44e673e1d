package netstat_watch

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Velocidex/ordereddict"
	"go.uber.org/goleak"

	"github.com/netwatch-dfir/netwatch/internal/testutil"
)

// helperChurn serves on a loopback port and connects to it rate times a
// second for the given duration, each connection closed at once by the
// client (so each leaves a TIME_WAIT remnant). It prints the server port
// first, then every client port, then "DONE".
func helperChurn(rateArg, durArg string) {
	rate, _ := strconv.Atoi(rateArg)
	dur, _ := time.ParseDuration(durArg)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	testutil.Serve(ln)
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "SERVER", ln.Addr().(*net.TCPAddr).Port)
	out.Flush()
	// Wait for the watcher's baseline.
	time.Sleep(500 * time.Millisecond)

	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	perTick := rate / 100
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		<-tick.C
		for i := 0; i < perTick; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp4", ln.Addr().String())
				if err != nil {
					return
				}
				port := c.LocalAddr().(*net.TCPAddr).Port
				c.Write([]byte("x"))
				c.Close()
				mu.Lock()
				fmt.Fprintln(out, "CLIENT", port)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	fmt.Fprintln(out, "DONE")
	out.Flush()
	// Keep serving until the parent has seen the last snapshot.
	time.Sleep(time.Second)
	os.Exit(0)
}

// A churn of short connections loses no connection and doubles none: each
// one the generator made is reported as added exactly once (while open with
// its Pid, or as its TIME_WAIT remnant with Pid -1), removed at most once,
// and nothing else is reported for its server port. NETWATCH_SOAK=1m runs
// it for a minute at 2,000 a second and then checks that memory comes back
// down (make soak); make test runs 3 s at 1,000 a second.
func TestChurnNoLossNoDup(t *testing.T) {
	dur := 3 * time.Second
	if v := os.Getenv("NETWATCH_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("NETWATCH_SOAK: %v", err)
		}
		dur = d
	}
	rate := 1000
	settle := 500 * time.Millisecond
	if os.Getenv("NETWATCH_SOAK") != "" {
		// Thousands a second, and then long enough for every TIME_WAIT
		// remnant to expire (60 s), so that memory must come back down.
		rate, settle = 2000, 65*time.Second
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	baseHeap := heapInUse()

	ctx, cancel := context.WithTimeout(context.Background(), dur+settle+60*time.Second)
	defer cancel()
	rows, logs := watch(t, ctx, "SELECT * FROM netstat_watch(period=0.1, kinds='tcp', listening=FALSE)")

	cmd := exec.Command(os.Args[0], strconv.Itoa(rate), dur.String())
	cmd.Env = append(os.Environ(), "NETWATCH_HELPER=churn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()

	sc := bufio.NewScanner(stdout)
	var server uint32
	if sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "SERVER" {
			p, _ := strconv.Atoi(f[1])
			server = uint32(p)
		}
	}
	if server == 0 {
		t.Fatalf("generator did not start: %q", sc.Text())
	}

	// Loopback reuses TIME_WAIT tuples (tcp_tw_reuse=2), so one port may
	// carry several connections in a run.
	made := map[uint32]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && f[0] == "CLIENT" {
				p, _ := strconv.Atoi(f[1])
				made[uint32(p)]++
			}
		}
	}()

	added := map[uint32]int{}
	removed := map[uint32]int{}
	var stray []*ordereddict.Dict
	var quiet <-chan time.Time
loop:
	for {
		select {
		case <-done:
			done = nil
			// More snapshots see the last remnants.
			quiet = time.After(settle)
		case <-quiet:
			break loop
		case <-ctx.Done():
			t.Fatal("timed out")
		case r, ok := <-rows:
			if !ok {
				break loop
			}
			if get(r, "Raddr.Port") != server {
				if get(r, "Laddr.Port") == server {
					continue // the server's side of each connection
				}
				continue // another process on this machine
			}
			port, _ := get(r, "Laddr.Port").(uint32)
			switch get(r, "Diff") {
			case "added":
				added[port]++
			case "removed":
				removed[port]++
				if added[port] == 0 {
					stray = append(stray, r)
				}
			}
		}
	}
	// Every remnant has expired by now in a soak: the tracker must be back
	// to the size of the machine's socket table.
	heap := heapInUse()
	cancel()
	for range rows {
	}
	t.Logf("heap in use: %d KiB before, %d KiB after", baseHeap>>10, heap>>10)
	if settle > time.Minute && heap > baseHeap+16<<20 {
		t.Errorf("heap grew from %d to %d KiB over the soak", baseHeap>>10, heap>>10)
	}

	lost, doubled, unknown := 0, 0, 0
	for p, n := range made {
		switch a := added[p]; {
		case a < n:
			lost += n - a
		case a > n:
			doubled += a - n
		}
		if removed[p] > n {
			doubled += removed[p] - n
		}
	}
	for p := range added {
		if made[p] == 0 {
			unknown++
		}
	}
	t.Logf("churn: %d connections in %v, %d added, %d removed rows",
		sumValues(made), dur, sumValues(added), sumValues(removed))
	// Enough churn to mean something; the generator is this test binary,
	// several times slower under the race detector.
	least := rate * int(dur/time.Second) / 2
	if raceEnabled {
		least /= 4
	}
	if sumValues(made) < least {
		t.Errorf("generator made only %d connections (at least %d expected)", sumValues(made), least)
	}
	if lost != 0 || doubled != 0 || unknown != 0 || len(stray) != 0 {
		t.Errorf("lost %d, doubled %d, unknown %d, removed-before-added %d\nlogs: %s",
			lost, doubled, unknown, len(stray), logs)
	}

}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func sumValues(m map[uint32]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
