#!/usr/bin/env bash
# Builds a tool's command from the pinned Go module of hack/<tool>/ (its go.mod/go.sum) and caches the
# binary outside the work tree, keyed by those files. Prints the binary's path; only the first run pays
# for the build. Usage: hack/go-tool.sh <tool> <Go package of its command>.
set -euo pipefail

tool=$1 pkg=$2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$tool"
cache=${FORGEOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/forgeops}
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)
bin="$cache/$tool/$key/$tool"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "go-tool.sh: Go is required to build $tool" >&2; exit 1; }
mkdir -p "$(dirname "$bin")"
tmp=$(mktemp "$bin.XXXXXX")
trap 'rm -f "$tmp"' EXIT
echo "go-tool.sh: building $tool (first run only; a minute or three)" >&2
(cd "$here" && GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp" "$pkg")
mv "$tmp" "$bin"
echo "$bin"
