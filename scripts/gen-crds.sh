#!/usr/bin/env bash
# Regenerates crds/ from the operator's Rust types, and the copy the operator chart renders its CRD
# templates from (charts/duo-operator/files/crds/). Bump the chart version when a CRD changes.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f crds/*.yaml charts/duo-operator/files/crds/*.yaml
cargo run -q --release --bin duo-operator -- crd --out-dir crds
mkdir -p charts/duo-operator/files/crds
cp crds/*.yaml charts/duo-operator/files/crds/
