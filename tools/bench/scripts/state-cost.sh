#!/usr/bin/env bash
# What netstat_watch's state file costs on a busy host: CPU time and peak
# RSS of `velociraptor query` with and without state=, next to 16,000
# loopback connections held open and 200 new ones a second (each closed at
# once), period 0.25 s (the client artifact's default). Then the peak when a
# watcher resumes from a state whose 16,000 connections have all ended.
#
#   tools/bench/scripts/state-cost.sh build/velociraptor [RUNS]
#
# Loopback only. Needs python3 and ~16,500 file descriptors (ulimit -Hn).
set -euo pipefail
bin="$(realpath "$1")"; runs="${2:-3}"
work="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

cat > "$work/holder.py" <<'PY'
import resource, socket, sys, threading, time
h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
n, rate, dur = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(65535)
kept = []
def accept():
    while True:
        try: c, _ = srv.accept()
        except OSError: return
        if len(kept) < n // 2: kept.append(c)
        else: c.close()
threading.Thread(target=accept, daemon=True).start()
held = [socket.create_connection(srv.getsockname()) for _ in range(n // 2)]
print("held", n, flush=True)
end = time.time() + dur
while time.time() < end:
    t0 = time.time()
    for _ in range(rate // 10):
        socket.create_connection(srv.getsockname()).close()
    time.sleep(max(0, 0.1 - (time.time() - t0)))
PY

# measure QUERY SECONDS: ms of CPU per second after a 5 s warm-up, peak RSS.
measure() {
    "$bin" query --format jsonl "$1" >/dev/null 2>&1 &
    local pid=$! t0 t1
    sleep 5; t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    sleep "$2"; t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    local hwm; hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    # utime+stime are in 10 ms ticks.
    echo "$(( (t1 - t0) * 10 / $2 )) ms/s, peak RSS $(( hwm / 1024 )) MB"
}

python3 "$work/holder.py" 16000 200 $(( runs * 70 + 30 )) > "$work/holder.out" &
until grep -q held "$work/holder.out" 2>/dev/null; do sleep 1; done
for i in $(seq "$runs"); do
    echo "run $i: without state: $(measure 'SELECT * FROM netstat_watch(period=0.25)' 25)"
    echo "run $i: with state:    $(measure "SELECT * FROM netstat_watch(period=0.25, state='$work/state')" 25)"
done
cp "$work/state" "$work/saved"
kill %1 2>/dev/null || true; wait 2>/dev/null || true
sleep 2
for i in $(seq "$runs"); do
    cp "$work/saved" "$work/resume"
    echo "run $i: resuming 16,000 ended connections: $(measure "SELECT * FROM netstat_watch(period=0.25, state='$work/resume')" 10)"
done
