#!/usr/bin/env bash
# The performance figures of README "## Performance" (issue 7 item 4, issue 3 memory): scripts, not tests;
# not part of scripts/test.sh. Each prints its figures and whether its bar is met.
#
#   scripts/perf.sh            all three
#   scripts/perf.sh timeline   (a) timeline queries/s, latency and gateway overhead over 3 communities at 10 ms
#   scripts/perf.sh relay      (b) RAD-75 relay of a 1 GiB study through a duo-gateway process: throughput
#                                  relative to direct, gateway peak RSS
#   scripts/perf.sh parse      (c) ebRIM AdhocQueryResponse parse: our codec next to python lxml
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .tools/env
what=${1:-all}
cargo build -q --release --bin duo-gateway
export DUO_GATEWAY_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/duo-gateway
bench() { printf '\n== cargo bench -p duo-runtime --bench %s\n' "$*" >&2; cargo bench -q -p duo-runtime --bench "$@"; }
case $what in all | timeline) bench timeline_load -- --rates 100,200,300,500 --seconds 20 ;; esac
case $what in all | relay) bench gateway_relay -- --rounds 3 ;; esac
case $what in all | parse) bench ebrim_lxml ;; esac
