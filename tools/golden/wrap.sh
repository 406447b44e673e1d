#!/usr/bin/env bash
# Build the Test. artifacts of the golden tests and benchmarks into DIR
# (for velociraptor --definitions DIR).
#
#   tools/golden/wrap.sh DIR
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }

# Test wrappers (testdata/wrappers/NAME.yaml): Test.NAME is the shipped
# artifacts/NAME.yaml renamed, with the wrapper's parameters added and its
# query in place of the shipped source's live part (from the line marked
# "-- ---- live events" on), so that golden tests feed the shipped logic
# rows without a test path in what users run.
defs="$1"
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
