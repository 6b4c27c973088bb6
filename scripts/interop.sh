#!/usr/bin/env bash
# Interop tests with an independent SOAP stack (python zeep): against the IHE codec behind a pipe
# (ihe-codec) and against a real `duo-gateway serve` process whose communities `duo-testbed interop` runs
# (interop/conftest.py starts both).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .tools/env
if [[ ! -d interop ]]; then echo "interop: no suites yet" >&2; exit 0; fi
cargo build -q --release --bin duo-gateway --bin ihe-codec --bin duo-testbed
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
export DUO_GATEWAY_BIN=$target_dir/release/duo-gateway
export DUO_TESTBED_BIN=$target_dir/release/duo-testbed
export DUO_IHE_CODEC_BIN=$target_dir/release/ihe-codec
"$DUO_PYTHON" -m pytest -q interop "$@"
