#!/usr/bin/env bash
# Run the golden tests under testdata/golden through the custom binary, in
# Velociraptor's own `golden` format (NAME.in.yaml queries, NAME.out.yaml
# expected output).
#
#   tools/golden/run.sh BINARY [FILTER]          compare, fail on a difference
#   UPDATE=1 tools/golden/run.sh BINARY [FILTER] rewrite the .out.yaml files
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BINARY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
FILTER="${2:-}"

flags=(--testonly)
[[ -n "${UPDATE:-}" ]] && flags=()
# NO_ALARM=1: no 30 s limit per file (a machine too loaded to run one in time).
[[ -n "${NO_ALARM:-}" ]] && flags+=(--disable_alarm)

# The golden tests' Test. artifacts (see tools/golden/wrap.sh).
defs="$ROOT/build/golden-artifacts"
"$ROOT/tools/golden/wrap.sh" "$defs"

# Upstream's test config points its read-only datastore at paths relative to
# the staged source tree.
cd "$ROOT/build/upstream"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
"$BINARY" --config artifacts/testdata/windows/test.config.yaml \
    --definitions "$defs" golden "$ROOT/testdata/golden" --env srcDir="$ROOT" \
    ${FILTER:+--filter="$FILTER"} "${flags[@]}" >"$out" 2>&1 || status=$?
if [[ -n "${UPDATE:-}" ]]; then
    # Without --testonly a new or changed file also exits non-zero.
    echo "golden: outputs rewritten; review: git diff testdata/golden"
    exit 0
fi
if ((status != 0)); then
    cat "$out"
    echo "golden: FAILED (to accept intended changes: UPDATE=1 $0 $*)" >&2
    exit 1
fi
grep -E "^golden: Opening" "$out" || true
echo "golden: all files match"
