#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kubectl) from pinned Go
# modules and caches the binaries, keyed by version, outside the work tree.
# Prints the directory that holds them. Only the first run pays for the build.
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${FORGEOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/forgeops}
bin="$cache/controlplane/kubernetes-$K8S_VERSION-etcd-$ETCD_VERSION"

if [ -x "$bin/etcd" ] && [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is required to build the control plane" >&2; exit 1; }
mkdir -p "$bin"
tmp=$(mktemp -d "$bin/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
v=k8s.io/component-base/version
ldflags="-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"

echo "build.sh: building etcd $ETCD_VERSION (first run only)" >&2
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)

echo "build.sh: building kube-apiserver and kubectl $K8S_VERSION (first run only, several minutes)" >&2
(cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
(cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl)

# Move into place last, so an interrupted build never leaves a half cache.
mv "$tmp/etcd" "$tmp/kube-apiserver" "$tmp/kubectl" "$bin/"
echo "$bin"
