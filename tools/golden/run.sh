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

# Test wrappers (testdata/wrappers/NAME.yaml): Test.NAME is the shipped
# artifacts/NAME.yaml renamed, with the wrapper's parameters added and its
# query in place of the shipped source's live part (from the line marked
# "-- ---- live events" on), so that golden tests feed the shipped logic
# rows without a test path in what users run.
defs="$ROOT/build/golden-artifacts"
rm -rf "$defs"
mkdir -p "$defs"
for wrapper in "$ROOT"/testdata/wrappers/*.yaml; do
    [[ -e "$wrapper" ]] || continue
    name="$(basename "$wrapper" .yaml)"
    awk -v wrapper="$wrapper" '
        BEGIN {
            part = ""
            while ((getline line < wrapper) > 0) {
                if (line ~ /^parameters:/) { part = "p"; continue }
                if (line ~ /^sources:/) { part = "s"; continue }
                if (part == "s" && line ~ /- query: [|]/) { part = "q"; continue }
                if (part == "p") params = params line "\n"
                if (part == "q") query = query line "\n"
            }
        }
        /^name: / { print "name: Test." substr($0, 7); next }
        /^parameters:/ { print; printf "%s", params; next }
        /^[A-Za-z_]+:/ { insrc = ($0 ~ /^sources:/) }
        insrc && /-- ---- live events/ { cut = 1 }
        !cut { print }
        END {
            if (!cut) { print "run.sh: no live events marker in " FILENAME > "/dev/stderr"; exit 1 }
            printf "%s", query
        }
    ' "$ROOT/artifacts/$name.yaml" > "$defs/Test.$name.yaml"
done

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
