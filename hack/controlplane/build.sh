#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kubectl) from pinned Go
# modules and caches the binaries, keyed by version, outside the work tree.
# Prints the directory that holds them. Only the first run pays for the build.
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${FORGEOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/forgeops}
bin="$cache/controlplane/kubernetes-$K8S_VERSION-etcd-$ETCD_VERSION"

all="etcd kube-apiserver kube-controller-manager kubectl"
missing=""
for b in $all; do [ -x "$bin/$b" ] || missing="$missing $b"; done
if [ -z "$missing" ]; then
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

# Only what is missing is built: a cache from before kube-controller-manager joined keeps the rest.
for b in $missing; do
  echo "build.sh: building $b (first run only; the Kubernetes ones take several minutes)" >&2
  case $b in
    etcd) (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3) ;;
    *) (cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/$b" "k8s.io/kubernetes/cmd/$b") ;;
  esac
  # Moved into place one by one, so an interrupted build never leaves a half-written binary.
  mv "$tmp/$b" "$bin/"
done
echo "$bin"
