#!/usr/bin/env bash
# Checks the layering of the workspace from the crate graph (cargo tree, resolved from
# Cargo.lock), so that it cannot drift back:
# - duo-core depends on no other crate of the workspace; duo-wire and duo-trust only on duo-core;
#   the gateway crate duo-runtime on those three only: never on the test kit (duo-testkit), and its
#   binary is built without the test kit's certificate and temp-file crates (rcgen, tempfile);
# - the operator (normal and build dependencies: what its binary is made of; its tests may use the
#   simulators) holds no HTTP server framework (axum, hyper's or hyper-util's server), no DICOM
#   (dicom-*), and neither the gateway runtime nor its simulators (duo-runtime);
# - cargo itself refuses an import from a crate that is not a dependency, and a dependency cycle, so
#   an upward import (wire → runtime, core → wire, ...) cannot compile.
# Exits non-zero naming every violation.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
violation() { echo "check-layers: $*" >&2; fail=1; }

tree() { # cargo tree, or a one-line reason and exit 2 (a stale Cargo.lock, a manifest that does not parse)
  local out
  if ! out=$(cargo tree --locked "$@" 2>&1); then
    echo "check-layers: cargo tree $* failed: $(grep -m1 -E '^error' <<<"$out" || head -n1 <<<"$out")" >&2
    exit 2
  fi
  printf '%s\n' "$out"
}
# once up front: a stale Cargo.lock or a broken manifest is one clear line, not one per query below
tree -p duo-core --depth 0 >/dev/null

deps() { # the crates a package is built from (normal and build edges), one name per line
  tree -p "$1" -e normal,build --prefix none --format '{p}' | awk '{print $1}' | sort -u
}
features_of() { # the features of crate $2 as resolved for package $1 (normal and build edges)
  cargo tree --locked -p "$1" -e features,normal,build -i "$2" --prefix none 2>/dev/null \
    | sed -n "s/^$2 feature \"\\([^\"]*\\)\".*/\\1/p" | sort -u
}

workspace_of() { # the workspace crates among a package's dependencies, itself excepted
  deps "$1" | grep -E '^duo-' | grep -vx "$1" || true
}

for pair in "duo-core:" "duo-wire:duo-core" "duo-trust:duo-core" "duo-runtime:duo-core duo-wire duo-trust"; do
  crate=${pair%%:*}
  allowed=${pair#*:}
  for d in $(workspace_of "$crate"); do
    [[ " $allowed " == *" $d "* ]] || violation "$crate depends on $d (allowed: ${allowed:-none})"
  done
done

for d in $(deps duo-runtime); do
  case $d in
    rcgen | tempfile) violation "duo-runtime (the shipped gateway) is built with the test kit's $d" ;;
  esac
done
# test helpers of the lower crates stay out of the shipped gateway
for f in $(features_of duo-runtime duo-wire); do
  [[ $f == test-support ]] && violation "duo-runtime is built with duo-wire's test-support feature"
done
for f in $(features_of duo-runtime duo-core); do
  [[ $f == test-certificates ]] && violation "duo-runtime is built with duo-core's test-certificates feature"
done
# the core crate does no I/O and no HTTP: no async runtime, HTTP or TLS client or server
for d in $(deps duo-core); do
  case $d in
    tokio | tokio-* | reqwest | hyper | hyper-* | axum | axum-* | tower | tower-* | tiny_http)
      violation "duo-core is built with $d (the core does no I/O and no HTTP)" ;;
  esac
done

op=$(deps duo-operator)
for d in $op; do
  case $d in
    axum | axum-core | duo-runtime | dicom*) violation "duo-operator is built with $d" ;;
  esac
done
for f in $(features_of duo-operator hyper) ; do
  [[ $f == server ]] && violation "duo-operator is built with hyper's HTTP server (feature server)"
done
for f in $(features_of duo-operator hyper-util); do
  [[ $f == server* ]] && violation "duo-operator is built with hyper-util's server (feature $f)"
done

if ((fail)); then
  exit 1
fi
echo "check-layers: duo-core alone; duo-wire, duo-trust on duo-core; duo-runtime on those, without the test kit; duo-operator without an HTTP server, DICOM or the runtime ($(wc -l <<<"$op") crates)"
