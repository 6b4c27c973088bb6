#!/usr/bin/env bash
# Fails when crds/ or the operator chart's copy (charts/duo-operator/files/crds/) differs from what
# `duo-operator crd` generates (regenerate both with scripts/gen-crds.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cargo run -q --release --bin duo-operator -- crd --out-dir "$tmp"
status=0
for dir in crds charts/duo-operator/files/crds; do
  if ! diff -ru "$dir" "$tmp"; then
    echo "$dir is out of date: run scripts/gen-crds.sh and commit" >&2
    status=1
  fi
done
exit $status
