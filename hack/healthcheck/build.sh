#!/usr/bin/env bash
# Builds hack/healthcheck (the kstatus library and Argo CD's Lua interpreter, from the pinned Go
# modules in go.mod/go.sum) and caches the binary outside the work tree, keyed by the sources.
# Prints the binary's path. Only the first run pays for the build (about 10 s with a warm module
# cache).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${FORGEOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/forgeops}
key=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)
bin="$cache/healthcheck/$key/healthcheck"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is required to build hack/healthcheck" >&2; exit 1; }
mkdir -p "$(dirname "$bin")"
tmp=$(mktemp "$bin.XXXXXX")
trap 'rm -f "$tmp"' EXIT
echo "build.sh: building hack/healthcheck (first run only)" >&2
(cd "$here" && GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 go build -trimpath -o "$tmp" .)
mv "$tmp" "$bin"
echo "$bin"
