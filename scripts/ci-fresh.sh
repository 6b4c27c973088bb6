#!/usr/bin/env bash
# Runs the README's test command (.ci/run) the way a fresh machine would: a clean clone of the committed
# HEAD, with HOME and CARGO_HOME pointed at new empty folders, so nothing a previous build left in
# ~/.cargo/registry, ~/.cache/duo (venv, Go-built tools), ~/go or the Go build cache is used.
#
# Usage: scripts/ci-fresh.sh [--keep]
#   DUO_TOOLS_DIR=DIR scripts/ci-fresh.sh   reuse the Go-built tools (kube-apiserver, etcd, helm, ...) in DIR;
#                                           only when given explicitly (the one cache CI may have)
#   --keep                                  keep the scratch folder (clone, homes, target/) afterwards
# What it cannot reset: Debian packages already installed system-wide (setup.sh skips those), and the Rust
# toolchain itself (RUSTUP_HOME is kept: CI machines have rustup's toolchains preinstalled too).
# Prints the elapsed time at the end; exits with .ci/run's status.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
keep=0
[[ "${1:-}" == --keep ]] && keep=1

scratch=$(mktemp -d "${TMPDIR:-/tmp}/duo-fresh.XXXXXX")
cleanup() { ((keep)) && echo "ci-fresh: kept $scratch" >&2 || rm -rf "$scratch"; }
trap cleanup EXIT

git clone -q --no-hardlinks "$repo" "$scratch/clone"
mkdir -p "$scratch/home" "$scratch/cargo"
# rustup's proxies (cargo, rustc) stay on PATH; they find their toolchains through RUSTUP_HOME
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=$(dirname "$(command -v cargo)")

env_args=(
  HOME="$scratch/home"
  CARGO_HOME="$scratch/cargo"
  RUSTUP_HOME="$rustup_home"
  PATH="$cargo_bin:$PATH"
)
[[ -n "${DUO_TOOLS_DIR:-}" ]] && env_args+=(DUO_TOOLS_DIR="$DUO_TOOLS_DIR")
echo "ci-fresh: clone $scratch/clone at $(git -C "$repo" rev-parse --short HEAD), empty HOME and CARGO_HOME" \
  "${DUO_TOOLS_DIR:+(Go tools from $DUO_TOOLS_DIR)}" >&2

start=$(date +%s)
status=0
(cd "$scratch/clone" && env -u DUO_VENV -u CARGO_TARGET_DIR -u DUO_TOOLS_DIR "${env_args[@]}" .ci/run) || status=$?
end=$(date +%s)
printf 'ci-fresh: .ci/run exited %d after %dm%02ds\n' "$status" $(((end - start) / 60)) $(((end - start) % 60)) >&2
exit "$status"
