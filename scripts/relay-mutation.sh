#!/usr/bin/env bash
# The mutation run of damaged peer retrieve answers (issue 12, defect 7): several thousand cases of every
# damage kind plus random byte damage, relayed through ITI-43 and RAD-69 by a real duo-gateway process,
# then the 120 MiB inline answers. Prints a table per run (cases per damage kind, outcomes, slowest answer
# against the community's deadline, the gateway's peak RSS) and fails on any violation or a peak RSS of
# 64 MiB or more. A short run (300 cases) is part of `cargo test --workspace --release`.
#
#   scripts/relay-mutation.sh [CASES [SEED]]     default 5000 cases, seed 0x5eed1234
set -euo pipefail
cd "$(dirname "$0")/.."
export DUO_RELAY_MUTATION_CASES=${1:-5000}
if [ -n "${2:-}" ]; then export DUO_RELAY_MUTATION_SEED=$2; fi
export DUO_RELAY_RSS_BAR_MIB=64
exec cargo test -q --release -p duo-runtime --test relay_mutation -- --nocapture --test-threads 1 \
    mutation_run huge_inline_answers_are_refused_with_bounded_memory
