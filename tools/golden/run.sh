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

# Upstream's test config points its read-only datastore at paths relative to
# the staged source tree.
cd "$ROOT/build/upstream"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! "$BINARY" --config artifacts/testdata/windows/test.config.yaml \
    golden "$ROOT/testdata/golden" --env srcDir="$ROOT" \
    ${FILTER:+--filter="$FILTER"} "${flags[@]}" >"$out" 2>&1; then
    cat "$out"
    echo "golden: FAILED (diff: git diff testdata/golden after UPDATE=1 $0 $*)" >&2
    exit 1
fi
grep -E "^golden|Failed|FAIL" "$out" || true
echo "golden: all files match"
