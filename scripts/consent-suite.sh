#!/usr/bin/env bash
# The generated adversarial consent suite (runtime/tests/consent_suite.rs) with many more cases than the
# test command runs, each round with a fresh seed (printed, so a failure can be replayed with
# DUO_CONSENT_SEED=<seed>).
#
# Usage: scripts/consent-suite.sh [CASES_PER_ROUND] [ROUNDS] [TLS_CASES_PER_ROUND]
#   defaults: 100000 cases in process, 1 round, 1000 over HTTPS with mutual TLS.
#   DUO_CONSENT_SEED fixes the seed of the first round.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
rounds="${2:-1}"
tls_cases="${3:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo test -p duo-runtime --release --test consent_suite --no-run
for round in $(seq 1 "$rounds"); do
  if [[ $round -eq 1 && -n "${DUO_CONSENT_SEED:-}" ]]; then
    seed="$DUO_CONSENT_SEED"
  else
    seed="0x$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')"
  fi
  echo "round $round/$rounds: $cases cases in process, $tls_cases over HTTPS, seed $seed"
  DUO_CONSENT_CASES="$cases" DUO_CONSENT_TLS_CASES="$tls_cases" DUO_CONSENT_SEED="$seed" \
    cargo test -p duo-runtime --release --test consent_suite -- --nocapture 2>&1 \
    | grep -E '^consent suite|panicked|test result|violation|seed' 
done
