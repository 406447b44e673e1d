#!/usr/bin/env bash
# CPU per client event of Server.Alerts.TrackNetworkConnections with a long
# IOC list, through the built binary's `query` command: the alert stages of
# the shipped artifact (its Test. wrapper, tools/golden/wrap.sh) on N
# synthetic events (one in ten matching), with IOCS networks (half IPv4
# /24s, half IPv6 /48s), on the netwatch build (netwatch_network(): the list
# compiled once) and as on a stock server (Stock: cidr_contains() over the
# whole list at every event). CPU time (user + system) of the process, the
# median of RUNS runs; per event = (CPU with N events - CPU with none) / N.
#
#   tools/bench/scripts/ioc-cost.sh BINARY [N] [IOCS] [RUNS]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
BINARY="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
N="${2:-500}"
IOCS="${3:-20000}"
RUNS="${4:-3}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$ROOT/tools/golden/wrap.sh" "$work/defs"

query() { # EVENTS STOCK
    cat <<VQL
LET NL <= format(format="%c", args=[10])
LET Half <= int(int=$IOCS / 2)
LET V4 = SELECT format(format="100.%v.%v.0/24,filler",
                       args=[int(int=_value / 250), _value - 250 * int(int=_value / 250)]) AS Line
  FROM range(end=Half)
LET V6 = SELECT format(format="2001:db8:%x::/48,filler", args=[_value + 4096]) AS Line
  FROM range(end=Half)
LET IOCList <= "Network,Description" + NL + join(sep=NL, array=V4.Line) + NL
    + join(sep=NL, array=V6.Line) + NL + "203.0.113.0/24,c2"
LET Events <= SELECT dict(ClientId="C.1", Diff="added", Timestamp=1590938885 + _value,
    Raddr=dict(IP=if(condition=_value / 10 = int(int=_value / 10),
                     then="203.0.113.7", else="198.51.100.9"), Port=1000 + _value),
    Pid=_value, ProcInfo=dict(Data=dict(Name="p" + str(str=_value)))) AS E
  FROM range(end=$1)
SELECT count() AS Alerts FROM Artifact.Test.Server.Alerts.TrackNetworkConnections(
    Events=Events.E, IOCs=IOCList, Stock=$2,
    DedupSeconds=0, RateLimit=0, GlobalRateLimit=0)
GROUP BY 1
VQL
}

cpu() { # EVENTS STOCK -> seconds of CPU
    /usr/bin/time -o "$work/time" -f "CPU %U %S" "$BINARY" --definitions "$work/defs" \
        query "$(query "$1" "$2")" >"$work/out" 2>/dev/null
    if [[ "$1" -gt 0 ]] && ! grep -q '"Alerts": '"$(( ($1 + 9) / 10 ))" "$work/out"; then
        echo "ioc-cost: unexpected result with $1 events (Stock=$2):" >&2
        cat "$work/out" >&2
        exit 1
    fi
    awk '/^CPU/ { printf "%.3f\n", $2 + $3 }' "$work/time"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "ioc-cost: $IOCS IOC networks, $N events, median of $RUNS runs (CPU seconds)"
printf "| server | CPU, no event | CPU, %d events | per event |\n| --- | --- | --- | --- |\n" "$N"
for stock in FALSE TRUE; do
    base="$(for _ in $(seq "$RUNS"); do cpu 0 "$stock"; done | median)"
    with="$(for _ in $(seq "$RUNS"); do cpu "$N" "$stock"; done | median)"
    name="netwatch build (netwatch_network)"
    [[ "$stock" == TRUE ]] && name="stock server (cidr_contains)"
    awk -v n="$name" -v b="$base" -v w="$with" -v e="$N" \
        'BEGIN { printf "| %s | %.2f s | %.2f s | %.2f ms |\n", n, b, w, (w - b) * 1000 / e }'
done
