#!/usr/bin/env bash
# Scale benchmark of the operator (not a test): starts etcd + kube-apiserver (duo-testenv), the real
# `duo-operator run` process, applies N DuoGateways (default 500) in groups of 10 that find each other,
# and prints the time until every gateway has all its children and a current status, and the operator's
# peak RSS. Bars (issue 5): under 120 s and under 150 MiB.
#
# Usage: scripts/bench-operator-scale.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .tools/env
cargo build -q --release --bin duo-operator --example bench_scale
target=${CARGO_TARGET_DIR:-target}
"$target/release/examples/bench_scale" "${1:-500}"
