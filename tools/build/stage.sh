#!/usr/bin/env bash
# Stage a Velociraptor release's source so that it can be built with our
# plugins compiled in.
#
# The module zip served by the Go proxy lacks the generated fileb0x assets
# (artifacts, config, crypto, GUI), and `go build -overlay` refuses files under
# GOMODCACHE, so we copy the source into build/upstream, build the GUI and
# generate the assets there. Nothing of upstream is committed.
#
#   stage.sh upstream    copy + npm build + static assets + go.work (slow,
#                        ~1 min, and only when the source changes; otherwise
#                        it only rewrites go.work when that changes)
#   stage.sh artifacts   add our artifacts and VQL docs, regenerate the
#                        artifact assets (fast, on every artifact change)
#   stage.sh advisories  print one line when the staged release has known
#                        advisories (tools/build/advisories.txt)
#
# Which source (environment, or make variables of the same names):
#   (neither)                      the version our go.mod requires (CI)
#   VELOCIRAPTOR_VERSION=v0.77.2   that release, from the Go module proxy
#   UPSTREAM_SRC=/path/to/checkout a Velociraptor source tree (a release tag
#                                  cloned by you); it is copied, never modified
#   UPSTREAM_REPLACE="mod=mod@ver ..."
#                                  extra `replace` lines for go.work, in
#                                  `go mod edit -replace` syntax, for a module
#                                  proxy that does not serve some of the
#                                  release's dependencies (docs/SECURITY.md)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
STAGE="$ROOT/build/upstream"
MARK="$STAGE/.netwatch-staged"
ADVISORIES="$ROOT/tools/build/advisories.txt"
UPSTREAM_MODULE="www.velocidex.com/golang/velociraptor"
cd "$ROOT"

die() {
    echo "stage: $*" >&2
    exit 1
}

pinned_version() {
    # The version our go.mod requires is the default source.
    GOWORK=off go list -m -f '{{.Version}}' "$UPSTREAM_MODULE"
}

# The module path a go.mod declares ("" when there is none).
module_of() {
    [[ -f "$1/go.mod" ]] || return 0
    sed -n 's/^module[ \t]\{1,\}\([^ \t]*\).*/\1/p' "$1/go.mod" | head -1
}

# Refuses, naming it, anything that is not a Velociraptor source tree.
check_checkout() {
    local src="$1" module
    [[ -d "$src" ]] || die "UPSTREAM_SRC=$src: no such directory"
    module="$(module_of "$src")"
    [[ "$module" == "$UPSTREAM_MODULE" ]] ||
        die "UPSTREAM_SRC=$src is not a Velociraptor checkout: its go.mod declares ${module:-no module}, not $UPSTREAM_MODULE"
    local f
    for f in bin gui/velociraptor/package.json artifacts/b0x.yaml config/b0x.yaml \
        crypto/b0x.yaml gui/velociraptor/b0x.yaml docs/references/vql.yaml constants/constants.go; do
        [[ -e "$src/$f" ]] ||
            die "UPSTREAM_SRC=$src is not a Velociraptor checkout: $f is missing"
    done
}

# What identifies the staged source: a change means copying and building
# the GUI again; anything else reuses the staged tree.
source_id() {
    if [[ -n "${UPSTREAM_SRC:-}" ]]; then
        # The file list with sizes and times, so that checking out another
        # tag (or editing a file) in the same directory re-stages.
        local sum
        sum="$(cd "$UPSTREAM_SRC" && find . \( -path ./.git -o -path ./gui/velociraptor/node_modules \
            -o -path ./gui/velociraptor/build \) -prune -o -type f -printf '%P %s %T@\n' |
            LC_ALL=C sort | sha256sum | cut -c1-16)"
        echo "src $UPSTREAM_SRC $sum"
    else
        echo "$1"
    fi
}

# The directory holding the release's source: the user's checkout, or the
# module from the module cache (downloaded when needed). Refuses, naming it,
# a version the proxy does not serve, before anything staged is touched.
source_dir() {
    local version="$1" out dir
    if [[ -n "${UPSTREAM_SRC:-}" ]]; then
        echo "$UPSTREAM_SRC"
        return
    fi
    out="$(GOWORK=off go mod download -json "$UPSTREAM_MODULE@$version" 2>&1)" || true
    dir="$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$out")"
    if [[ ! -d "$dir" ]]; then
        die "Velociraptor $version is not served by the Go module proxy ($(go env GOPROXY)): $(sed -n 's/^\t"Error": "\(.*\)",*$/\1/p' <<<"$out" | sed 's/\\n.*//')
       Clone that release tag and build with UPSTREAM_SRC=/path/to/checkout (docs/SECURITY.md)."
    fi
    echo "$dir"
}

# Copies the release's source into the stage (never node_modules or a GUI
# build of the checkout: the GUI is built here, from its lock file).
copy_source() {
    local dir="$1"
    echo "stage: Velociraptor source $dir -> build/upstream" >&2
    tar -C "$dir" --exclude=./.git --exclude=./gui/velociraptor/node_modules \
        --exclude=./gui/velociraptor/build -cf - . | tar -C "$STAGE" -xf -
    chmod -R u+w "$STAGE"
}

# The release's own `replace` lines, copied into go.work so that they win
# over the copy our go.mod keeps for v0.75.2 (go.work replaces override the
# workspace modules' ones, which would otherwise conflict when a release
# changes one). Local paths (=> ../x) are upstream's developer overrides.
upstream_replaces() {
    awk '
        /^replace[ \t]*\(/ { block = 1; next }
        block && /^\)/     { block = 0; next }
        /^replace[ \t]/    { sub(/^replace[ \t]+/, ""); print; next }
        block              { print }
    ' "$STAGE/go.mod" | sed 's://.*$::' | awk '/=>/ && $0 !~ /=>[ \t]*[.\/]/ { $1 = $1; print }'
}

# UPSTREAM_REPLACE's entries (old=new@version, as `go mod edit -replace`)
# as go.work lines.
extra_replaces() {
    local r old new
    for r in ${UPSTREAM_REPLACE:-}; do
        [[ "$r" == *=* ]] || die "UPSTREAM_REPLACE entry '$r' is not of the form module=module@version"
        old="${r%%=*}"
        new="${r#*=}"
        if [[ "$new" == *@* ]]; then
            echo "$old => ${new%@*} ${new##*@}"
        else
            echo "$old => $new"
        fi
    done
}

# go.work uses our module and the staged one; it is rewritten only when its
# text changes so that make's timestamps stay meaningful. Returns 0 when it
# changed.
write_go_work() {
    local tmp
    tmp="$(mktemp)"
    {
        echo "// Generated by tools/build/stage.sh: do not commit."
        echo "go 1.26"
        echo
        echo "use ("
        echo "	."
        echo "	./build/upstream"
        echo ")"
        echo
        echo "// The staged release's replace lines."
        upstream_replaces | sed 's/^/replace /'
        if [[ -n "${UPSTREAM_REPLACE:-}" ]]; then
            echo
            echo "// UPSTREAM_REPLACE"
            extra_replaces | sed 's/^/replace /'
        fi
    } >"$tmp"
    # A later replace of the same module path wins: keep the last one.
    awk '/^replace /{ last[$2] = NR } { line[NR] = $0 } END {
        for (i = 1; i <= NR; i++) { split(line[i], f, " "); if (f[1] != "replace" || last[f[2]] == i) print line[i] } }' \
        "$tmp" >"$tmp.dedup"
    mv "$tmp.dedup" "$tmp"
    if cmp -s "$tmp" "$ROOT/go.work"; then
        rm -f "$tmp"
        return 1
    fi
    mv "$tmp" "$ROOT/go.work"
    rm -f "$ROOT/go.work.sum"
    return 0
}

# One file in upstream's main package pulls our plugins in (rewritten on
# every staging, so that a new package is picked up without re-staging).
write_plugins() {
    cat >"$STAGE/bin/netwatch_plugins.go.tmp" <<'EOF'
// Generated by netwatch tools/build/stage.sh.
package main

import (
	_ "github.com/netwatch-dfir/netwatch/vql/ipset"
	_ "github.com/netwatch-dfir/netwatch/vql/netstat_watch"
	_ "github.com/netwatch-dfir/netwatch/vql/webhook"
)
EOF
    if cmp -s "$STAGE/bin/netwatch_plugins.go.tmp" "$STAGE/bin/netwatch_plugins.go"; then
        rm -f "$STAGE/bin/netwatch_plugins.go.tmp"
    else
        mv "$STAGE/bin/netwatch_plugins.go.tmp" "$STAGE/bin/netwatch_plugins.go"
    fi
}

fileb0x() {
    # Upstream's own pinned fileb0x, built through go.work (so that the
    # replace lines apply), run from the staged root so that the asset
    # format matches what the staged code expects.
    if [[ ! -x "$STAGE/.netwatch-fileb0x" ]]; then
        go build -o "$STAGE/.netwatch-fileb0x" github.com/Velocidex/fileb0x
    fi
    (cd "$STAGE" && ./.netwatch-fileb0x "$1" >/dev/null)
}

# The release as "0.77.2", read from the staged source.
staged_version() {
    sed -n 's/^[ \t]*VERSION[ \t]*=[ \t]*"\([^"]*\)".*/\1/p' "$STAGE/constants/constants.go" | head -1
}

stage_upstream() {
    local version="" id
    if [[ -n "${UPSTREAM_SRC:-}" && -n "${VELOCIRAPTOR_VERSION:-}" ]]; then
        die "set one of VELOCIRAPTOR_VERSION ($VELOCIRAPTOR_VERSION) and UPSTREAM_SRC ($UPSTREAM_SRC), not both"
    fi
    if [[ -n "${UPSTREAM_SRC:-}" ]]; then
        local abs
        abs="$(cd "$UPSTREAM_SRC" 2>/dev/null && pwd)" ||
            die "UPSTREAM_SRC=$UPSTREAM_SRC: no such directory"
        UPSTREAM_SRC="$abs"
        check_checkout "$UPSTREAM_SRC"
    else
        version="${VELOCIRAPTOR_VERSION:-$(pinned_version)}"
        [[ "$version" =~ ^v[0-9]+\.[0-9]+(\.[0-9]+)?(-[0-9A-Za-z.-]+)?$ ]] ||
            die "VELOCIRAPTOR_VERSION=$version is not a release version such as v0.77.2"
    fi
    id="$(source_id "$version")"

    if [[ -f "$MARK" && "$(cat "$MARK")" == "$id" ]]; then
        write_plugins
        # The marker's time tells make to regenerate the assets and relink.
        if write_go_work; then touch "$MARK"; fi
        return 0
    fi

    local dir
    dir="$(source_dir "$version")"
    rm -rf "$STAGE"
    mkdir -p "$STAGE"
    copy_source "$dir"
    write_go_work || true

    echo "stage: building the GUI (npm ci && npm run build)" >&2
    (cd "$STAGE/gui/velociraptor" && npm ci --no-audit --no-fund --loglevel=error && npm run build) >&2
    # Same fix-up as upstream's magefile ensure_assets().
    sed -i 's|="/app/assets/index|="{{.BasePath}}/app/assets/index|g' \
        "$STAGE/gui/velociraptor/build/index.html"

    echo "stage: generating static assets" >&2
    fileb0x config/b0x.yaml
    fileb0x crypto/b0x.yaml
    fileb0x gui/velociraptor/b0x.yaml

    # The upstream copy of the VQL reference, kept so that our entries can
    # be re-applied to a pristine file on every artifact change.
    cp "$STAGE/docs/references/vql.yaml" "$STAGE/docs/references/vql.upstream.yaml"

    write_plugins
    echo "$id" >"$MARK"
    echo "stage: staged Velociraptor $(staged_version)" >&2
}

stage_artifacts() {
    [[ -f "$MARK" ]] || stage_upstream
    local dest="$STAGE/artifacts/definitions/NetWatch"
    rm -rf "$dest"
    mkdir -p "$dest"
    if compgen -G "$ROOT/artifacts/*.yaml" >/dev/null; then
        cp "$ROOT"/artifacts/*.yaml "$dest/"
    fi
    # Our plugins' entries in the VQL reference, which the GUI's VQL help
    # and completions read.
    cat "$STAGE/docs/references/vql.upstream.yaml" "$ROOT"/docs/vql/*.yaml \
        >"$STAGE/docs/references/vql.yaml"
    fileb0x artifacts/b0x.yaml
}

# Is version $1 (0.75.2) older than $2? Numeric, dot by dot (no fork: it
# runs for every advisory).
older() {
    local -a a b
    local i
    IFS=. read -ra a <<<"${1%%-*}" # 0.77.1-rc1 compares as 0.77.1
    IFS=. read -ra b <<<"${2%%-*}"
    for ((i = 0; i < ${#a[@]} || i < ${#b[@]}; i++)); do
        ((10#${a[i]:-0} < 10#${b[i]:-0})) && return 0
        ((10#${a[i]:-0} > 10#${b[i]:-0})) && return 1
    done
    return 1
}

# An advisory hits a version unless a fix is in its branch (same x.y) at or
# below it, or the version's branch is newer than every branch fixed.
# $1 = version (0.75.2), $2 = comma-separated fixed versions.
affected() {
    local v="$1" branch="${1%.*}" f fixed_branch newest_branch=""
    local IFS=,
    for f in $2; do
        fixed_branch="${f%.*}"
        if [[ "$fixed_branch" == "$branch" ]]; then
            older "$v" "$f"
            return
        fi
        if [[ -z "$newest_branch" ]] || older "$newest_branch" "$fixed_branch"; then
            newest_branch="$fixed_branch"
        fi
    done
    # No fix in this branch: affected if a newer branch carries the fix.
    [[ -n "$newest_branch" ]] && older "$branch" "$newest_branch"
}

advisories() {
    local version id fixed where rest n=0 counts=""
    declare -A by_where=()
    [[ -f "$STAGE/constants/constants.go" ]] || return 0
    version="$(staged_version)"
    [[ -n "$version" ]] || return 0
    while read -r id fixed where rest; do
        [[ -z "$id" || "$id" == \#* ]] && continue
        if affected "$version" "$fixed"; then
            n=$((n + 1))
            by_where[$where]=$((${by_where[$where]:-0} + 1))
        fi
    done <"$ADVISORIES"
    ((n)) || return 0
    for where in server client analyst; do
        [[ -n "${by_where[$where]:-}" ]] && counts+="${counts:+, }${by_where[$where]} $where"
    done
    echo "netwatch: Velociraptor $version has $n published advisories ($counts): see docs/SECURITY.md"
}

case "${1:-}" in
upstream) stage_upstream ;;
artifacts) stage_artifacts ;;
advisories) advisories ;;
*)
    echo "usage: $0 upstream|artifacts|advisories" >&2
    exit 2
    ;;
esac
