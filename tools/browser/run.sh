#!/usr/bin/env bash
# make test-browser: start a netwatch deployment (tools/run) in a temporary
# folder on free loopback ports, let a real browser (Debian's chromium,
# headless, driven by playwright-core) log in to its GUI and find a
# connection in the client's Client Events, save the screenshot to
# docs/screenshot-client-events.png, and stop everything.
#
#   tools/browser/run.sh build/velociraptor
set -euo pipefail

BINARY=$(realpath "${1:?usage: $0 path/to/velociraptor}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHOT=${SCREENSHOT:-$ROOT/docs/screenshot-client-events.png}
REMOTE=127.77.77.77   # the only remote address the deployment records

if [ ! -x /usr/bin/chromium ]; then
  echo "test-browser: installing Debian's chromium"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

(cd "$ROOT/tools/browser" && npm ci --no-audit --no-fund --loglevel=error)

TMP=$(mktemp -d /tmp/netwatch-browser.XXXXXX)
RUN_PID=
cleanup() {
  local rc=$?
  if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
    kill -INT "$RUN_PID" 2>/dev/null || true
    # tools/run stops velociraptor (at most ~20 s) before it exits.
    for _ in $(seq 60); do kill -0 "$RUN_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$RUN_PID" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  if [ $rc -ne 0 ] && [ -f "$TMP/run.log" ]; then
    echo "test-browser: tools/run output:"; tail -n 30 "$TMP/run.log"
    echo "test-browser: velociraptor log:"; tail -n 30 "$TMP/ds/velociraptor.log" 2>/dev/null || true
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT INT TERM

cd "$ROOT"
go build -o "$TMP/run" ./tools/run
"$TMP/run" -binary "$BINARY" -dir "$TMP/ds" -fresh -free-ports -quiet \
  -period 0.2 -only-remote "$REMOTE" -client-param 'Kinds=["tcp"]' \
  -info "$TMP/info.json" > "$TMP/run.log" 2>&1 &
RUN_PID=$!

# Bounded wait for the deployment (enrolment included).
for _ in $(seq 180); do
  [ -f "$TMP/info.json" ] && break
  kill -0 "$RUN_PID" 2>/dev/null || { echo "test-browser: tools/run exited"; exit 1; }
  sleep 1
done
[ -f "$TMP/info.json" ] || { echo "test-browser: deployment not up after 180 s"; exit 1; }

mkdir -p "$(dirname "$SHOT")"
NETWATCH_REMOTE=$REMOTE FAILURE_SCREENSHOT="$ROOT/build/test-browser-failure.png" \
  node "$ROOT/tools/browser/client-events.mjs" "$TMP/info.json" "$SHOT"
echo "test-browser: PASS ($SHOT)"
