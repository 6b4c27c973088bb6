#!/usr/bin/env bash
# Builds the Go-built test tools (kube-apiserver, etcd, helm) from the official Go modules into a cache
# outside the work tree, and prints the folder that holds them. Reuses the cache when the pinned versions
# already built. Only the Go module proxy is needed (no other download source is reachable on CI).
#
# Usage: scripts/tools.sh            build if needed, print the bin folder
#        DUO_TOOLS_DIR=... overrides the cache root (default: $HOME/.cache/duo/tools)
set -euo pipefail

K8S_VERSION=1.36.3          # kube-apiserver (envtest model: only etcd + kube-apiserver are started)
STAGING_VERSION=0.36.3      # the staging modules are published as v0.<minor>.<patch>
ETCD_VERSION=3.6.8          # the etcd server the kubernetes go.mod itself pins (>= 3.5.13 for streaming lists)
HELM_VERSION=4.3.1

root=${DUO_TOOLS_DIR:-$HOME/.cache/duo/tools}
dir="$root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
bin="$dir/bin"
log() { echo "tools: $*" >&2; }

if [[ -x "$bin/kube-apiserver" && -x "$bin/etcd" && -x "$bin/helm" ]]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "tools: go is not installed" >&2; exit 1; }
mkdir -p "$bin"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

if [[ ! -x "$bin/kube-apiserver" || ! -x "$bin/etcd" ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  log "building kube-apiserver v$K8S_VERSION and etcd v$ETCD_VERSION (first time: several minutes)"
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module duo.local/k8stools"
    echo
    echo "go 1.26"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes v$K8S_VERSION"
    echo "	go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
    echo ")"
    echo
    echo "replace ("
    # every staging module k8s.io/kubernetes replaces with a local folder, pinned to its published version
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 v'"$STAGING_VERSION"'#p' "$gomod"
    echo ")"
  } > "$work/go.mod"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
GO
  (cd "$work" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$work" && go get "k8s.io/kubernetes@v$K8S_VERSION" "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2)
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  v=k8s.io/component-base/version
  ldflags="-s -w -X $v.gitVersion=v$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  (cd "$work" && go build -ldflags "$ldflags" -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
  (cd "$work" && go build -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
fi

if [[ ! -x "$bin/helm" ]]; then
  log "building helm v$HELM_VERSION"
  GOBIN="$bin" go install -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@v$HELM_VERSION"
fi
echo "$bin"
