#!/usr/bin/env bash
# Where the CPU of kernel events goes under churn: netstat_watch(backend=
# 'ebpf') with its rows shipped as `velociraptor query` ships them (JSON),
# against the same query with WHERE FALSE (the plugin still reads every
# record, tracks every connection and builds every row; Velociraptor drops
# them unserialised), against exclude_loopback=TRUE (the plugin reads every
# record and tracks every connection, but drops them before building a
# row), against an idle query, next to RATE loopback connections a second
# (each closed at once: both ends watched, 4 rows).
#
#   tools/bench/scripts/kernel-cost.sh build/velociraptor [RUNS] [RATE]
#
# Loopback only. Needs python3. CPU time of the query process (utime +
# stime) over 20 s after a 5 s warm-up; medians are left to the reader.
set -euo pipefail
bin="$(realpath "$1")"; runs="${2:-3}"; rate="${3:-500}"
work="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

cat > "$work/churn.py" <<'PY'
import socket, sys, threading, time
rate, dur = int(sys.argv[1]), float(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(4096)
def accept():
    while True:
        try: c, _ = srv.accept()
        except OSError: return
        c.close()
threading.Thread(target=accept, daemon=True).start()
print("churning", flush=True)
end = time.time() + dur
while time.time() < end:
    t0 = time.time()
    for _ in range(rate // 10):
        socket.create_connection(srv.getsockname()).close()
    time.sleep(max(0, 0.1 - (time.time() - t0)))
PY

# measure QUERY: ms of CPU per second over 20 s after a 5 s warm-up, and rows.
measure() {
    "$bin" query --format jsonl "$1" >"$work/rows" 2>/dev/null &
    local pid=$! t0 t1
    sleep 5; t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    sleep 20; t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    # utime+stime are in 10 ms ticks.
    echo "$(( (t1 - t0) * 10 / 20 )) ms/s, $(wc -l < "$work/rows") rows"
}

python3 "$work/churn.py" "$rate" $(( runs * 105 + 20 )) > "$work/churn.out" &
until grep -q churning "$work/churn.out" 2>/dev/null; do sleep 1; done
for i in $(seq "$runs"); do
    echo "run $i: rows shipped:   $(measure "SELECT * FROM netstat_watch(backend='ebpf')")"
    echo "run $i: WHERE FALSE:    $(measure "SELECT * FROM netstat_watch(backend='ebpf') WHERE FALSE")"
    echo "run $i: in-plugin filter: $(measure "SELECT * FROM netstat_watch(backend='ebpf', exclude_loopback=TRUE)")"
    echo "run $i: idle query:     $(measure "SELECT * FROM clock(period=1)")"
done
