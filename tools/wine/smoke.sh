#!/usr/bin/env bash
# Smoke test of the Windows build under Wine, on Linux: the collector and
# enricher tests cross-compiled for Windows, then the custom binary itself
# watching a loopback connection that a small Windows program (peer.exe)
# opens, holds and closes. Passes when netstat_watch() reports that
# connection added then removed, with peer.exe's PID and process details.
#
#   tools/wine/smoke.sh [build/velociraptor.exe]   # make windows first
#   tools/wine/smoke.sh -capture                   # rewrite vql/collector/testdata/mib_*
#
# Installs wine64 and mingw-w64 with apt-get when missing. Debian 12's Wine
# 8.0 lacks ProcessPrng (bcryptprimitives.dll), without which the Go
# runtime (>= 1.24) will not start: a stand-in built from
# bcryptprimitives.c goes into the Wine prefix (build/wine/prefix).
# Network traffic stays on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tools/wine
WORK=$ROOT/build/wine
export WINEPREFIX=$WORK/prefix WINEDEBUG=-all WINEARCH=win64

capture=false
EXE=$ROOT/build/velociraptor.exe
case "${1:-}" in
  -capture) capture=true ;;
  "") ;;
  *) EXE=$(realpath "$1") ;;
esac

log() { printf '== %s\n' "$*" >&2; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# --- tools ---------------------------------------------------------------
if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  log "installing wine64 and gcc-mingw-w64-x86-64"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wine64 gcc-mingw-w64-x86-64 >/dev/null
fi
mkdir -p "$WORK"

# --- prefix --------------------------------------------------------------
SYS32=$WINEPREFIX/drive_c/windows/system32
if [ ! -d "$SYS32" ]; then
  log "creating the Wine prefix $WINEPREFIX"
  wineboot --init >/dev/null 2>&1 || true
  wineserver -w
fi
if ! x86_64-w64-mingw32-objdump -p "$SYS32/bcryptprimitives.dll" 2>/dev/null | grep -qw ProcessPrng; then
  log "building the ProcessPrng stand-in (bcryptprimitives.dll)"
  x86_64-w64-mingw32-gcc -O2 -shared -o "$WORK/bcryptprimitives.dll" \
    "$HERE/bcryptprimitives.c" "$HERE/bcryptprimitives.def"
  cp "$WORK/bcryptprimitives.dll" "$SYS32/"
fi
# Stop the prefix's wineserver (ours) on the way out.
trap 'wineserver -k 2>/dev/null || true' EXIT

cd "$ROOT"
export CGO_ENABLED=0 GOOS=windows GOARCH=amd64

if $capture; then
  # A network namespace of its own, so that no socket of this machine ends
  # up in testdata/, and a copy of the prefix whose wineserver starts in it.
  log "capturing tables (TestCapture) in a fresh network namespace"
  go test -c -o "$WORK/collector.test.exe" ./vql/collector/
  rm -rf "$WORK/prefix-capture"; cp -a "$WINEPREFIX" "$WORK/prefix-capture"
  (cd vql/collector && unshare -n sh -c "ip link set lo up &&
     WINEPREFIX='$WORK/prefix-capture' wine '$WORK/collector.test.exe' -test.v -test.run '^TestCapture\$' -capture;
     rc=\$?; WINEPREFIX='$WORK/prefix-capture' wineserver -k; exit \$rc")
  exit
fi

# --- package tests under Wine ----------------------------------------------
for pkg in collector enricher; do
  log "go test ./vql/$pkg under Wine"
  go test -c -o "$WORK/$pkg.test.exe" "./vql/$pkg/"
  (cd "vql/$pkg" && wine "$WORK/$pkg.test.exe" -test.count=1) || fail "vql/$pkg tests under Wine"
done

# --- the binary --------------------------------------------------------------
[ -f "$EXE" ] || fail "$EXE missing: run make windows"
log "building peer.exe"
go build -o "$WORK/peer.exe" ./tools/wine/peer
unset GOOS GOARCH CGO_ENABLED

out=$WORK/smoke.jsonl
peer_out=$WORK/peer.jsonl
rm -f "$out" "$peer_out"

# peer.exe listens at once and connects 5 s later, after the watcher's first
# snapshot; emit_existing covers a slow start of the watcher all the same.
log "running peer.exe and netstat_watch() under Wine"
wine "$WORK/peer.exe" -delay 5s -hold 2s >"$peer_out" &
peer=$!
for _ in $(seq 100); do [ -s "$peer_out" ] && break; sleep 0.1; done
[ -s "$peer_out" ] || fail "peer.exe did not start"
listen=$(head -1 "$peer_out" | sed -n 's/.*"listen":\([0-9]*\).*/\1/p')

timeout 60 wine "$EXE" query --format jsonl \
  "SELECT * FROM netstat_watch(period=0.2, kinds='tcp', emit_existing=TRUE)
   WHERE Raddr.Port = $listen LIMIT 2" >"$out" || true
wait "$peer" || fail "peer.exe failed"

pid=$(head -1 "$peer_out" | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
client=$(sed -n 2p "$peer_out" | sed -n 's/.*"client":\([0-9]*\).*/\1/p')
log "peer.exe: pid $pid, 127.0.0.1:$client -> 127.0.0.1:$listen"
cat "$out" >&2

# One added and one removed row for the client's connection, both with
# peer.exe's PID and name.
python3 - "$out" "$pid" "$client" "$listen" <<'EOF' || fail "netstat_watch() rows"
import json, sys
path, pid, client, listen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(l) for l in open(path) if l.strip()]
def conn(r):
    return r["Laddr"] == {"IP": "127.0.0.1", "Port": client} and r["Raddr"] == {"IP": "127.0.0.1", "Port": listen}
added = [r for r in rows if r["Diff"] == "added" and conn(r)]
removed = [r for r in rows if r["Diff"] == "removed" and conn(r)]
assert len(added) == 1 and len(removed) == 1, f"want one added and one removed row, got {rows}"
a, r = added[0], removed[0]
for row in (a, r):
    assert row["Pid"] == pid, f"Pid {row['Pid']}, want {pid}"
    assert row["ProcInfo"]["Data"]["Name"] == "peer.exe", row["ProcInfo"]
    assert row["ConnId"] == a["ConnId"]
assert a["Direction"] == "outbound" and a["Status"] == "ESTAB", a
assert r["Duration"] > 0, r
print("ok: %s pid %d %s" % (a["ProcInfo"]["Data"]["Exe"], pid, a["ProcInfo"]["Data"]["CommandLine"]))
EOF
log "PASS"
