#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need (scripts/setup.sh),
# then the gates in order: formatting, clippy, CRD drift, the Rust test suites (unit, wire conformance
# with xmllint, operator on a real kube-apiserver, helm, real DICOM and Orthanc, NIST scenarios), a bounded
# fuzz run of every fuzz target (scripts/fuzz.sh --ci), the container image checks and the Python interop
# suite (zeep). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*" >&2; }

step "setup"
scripts/setup.sh
# shellcheck disable=SC1091
source .tools/env
# setup installed every tool the tests use: a test that would skip for a missing tool fails instead
export DUO_REQUIRE_TOOLS=1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --release -- -D warnings

step "CRD drift (crds/ must equal duo-operator crd)"
scripts/check-crds.sh

step "layers (crate graph: core alone, wire and trust on core, operator without HTTP server, DICOM or runtime)"
scripts/check-layers.sh

step "cargo test"
cargo test --workspace --release

step "fuzz targets, bounded run (scripts/fuzz.sh --ci; long runs: scripts/fuzz.sh)"
scripts/fuzz.sh --ci

step "container images (binaries fit the distroless base, Dockerfile contexts resolve)"
images/check.sh

step "python interop (zeep)"
scripts/interop.sh
