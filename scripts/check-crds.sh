#!/usr/bin/env bash
# Fails when crds/ differs from what `duo-operator crd` generates (regenerate with scripts/gen-crds.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cargo run -q --release --bin duo-operator -- crd --out-dir "$tmp"
if ! diff -ru crds "$tmp"; then
  echo "crds/ is out of date: run scripts/gen-crds.sh and commit" >&2
  exit 1
fi
