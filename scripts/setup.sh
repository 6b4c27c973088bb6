#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, idempotently:
#   - Debian packages: xmllint (libxml2-utils), xmlsec1 (XML signatures beside ours), Orthanc + DICOMweb
#     plugin, dcmtk, dicom3tools (dciodvfy), rsyslog with TLS, openssl (trusted front-end names and pins as
#     an operator computes them)
#   - a Python virtualenv with the pinned packages of scripts/requirements.txt (zeep, pydicom, lxml, pypdf)
#   - kube-apiserver, etcd and helm built from their Go modules (scripts/tools.sh, cached outside the clone)
#   - cargo-fuzz from crates.io for the fuzz targets (scripts/fuzz.sh), cached outside the clone, and the
#     nightly toolchain it builds with
# Prints nothing but progress; writes the environment the tests read to .tools/env (sourced by test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "setup: $*" >&2; }

APT_PACKAGES=(libxml2-utils xmlsec1 orthanc orthanc-dicomweb dcmtk dicom3tools rsyslog rsyslog-gnutls openssl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  # --no-install-recommends keeps the install small; policy-rc.d stops the packages starting their
  # system services (tests start their own Orthanc and rsyslog on loopback)
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv=${DUO_VENV:-$HOME/.cache/duo/venv}
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s scripts/requirements.txt "$venv/requirements.txt"; then
  log "creating Python virtualenv $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/requirements.txt
  cp scripts/requirements.txt "$venv/requirements.txt"
fi

tools_bin=$(scripts/tools.sh)

# cargo-fuzz: built once per version into a cache outside the clone (CI clones afresh), reused when present
CARGO_FUZZ_VERSION=0.13.2
fuzz_root=${DUO_CARGO_FUZZ_DIR:-$HOME/.cache/duo/cargo-fuzz-$CARGO_FUZZ_VERSION}
if [[ ! -x "$fuzz_root/bin/cargo-fuzz" ]]; then
  log "building cargo-fuzz $CARGO_FUZZ_VERSION into $fuzz_root"
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --version "$CARGO_FUZZ_VERSION" \
    --root "$fuzz_root" cargo-fuzz
fi
# libFuzzer instrumentation needs nightly rustc (-Zsanitizer)
if ! cargo +nightly --version >/dev/null 2>&1; then
  log "installing the nightly Rust toolchain (fuzzing)"
  rustup toolchain install nightly --profile minimal
fi

mkdir -p .tools
cat > .tools/env <<ENV
export DUO_TOOLS_BIN=$tools_bin
export DUO_CARGO_FUZZ=$fuzz_root/bin/cargo-fuzz
export DUO_PYTHON=$venv/bin/python
export DUO_TESTDATA=$PWD/testdata
ENV
log "ready (tools in $tools_bin, python $venv/bin/python)"
