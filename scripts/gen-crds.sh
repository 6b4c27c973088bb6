#!/usr/bin/env bash
# Regenerates crds/ from the operator's Rust types.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f crds/*.yaml
cargo run -q --release --bin duo-operator -- crd --out-dir crds
