#!/usr/bin/env bash
# Interop tests with an independent SOAP stack (python zeep), against a duo-gateway started here.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .tools/env
if [[ ! -d interop ]]; then echo "interop: no suites yet" >&2; exit 0; fi
cargo build -q --release --bin duo-gateway
export DUO_GATEWAY_BIN=$PWD/target/release/duo-gateway
"$DUO_PYTHON" -m pytest -q interop
