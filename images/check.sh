#!/usr/bin/env bash
# Checks what can be checked of the container images without a container engine (none on CI here):
#   1. each binary needs only libraries of its runtime base, distroless cc-debian12 (glibc, libgcc_s);
#   2. the build context the Dockerfiles see (Dockerfile.dockerignore) holds a complete Cargo workspace
#      that resolves with the committed lockfile, and it has the package and binary each Dockerfile builds.
# Usage: images/check.sh   (after `cargo build --release`, or `cargo test --workspace --release`)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}/release
fail() { echo "images: $*" >&2; exit 1; }

# libraries distroless cc-debian12 provides (glibc and libgcc_s; the binaries use rustls, no OpenSSL)
allowed='^(linux-vdso\.so\.1|libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|/lib64/ld-linux-x86-64\.so\.2|ld-linux-x86-64\.so\.2)$'
for bin in duo-gateway duo-operator; do
  [[ -x "$target/$bin" ]] || fail "$target/$bin not built: run cargo build --release first"
  while read -r lib; do
    [[ -z "$lib" ]] && continue
    [[ "$lib" =~ $allowed ]] || fail "$bin needs $lib, which distroless cc-debian12 does not have: change the base image in images/$bin/Dockerfile"
  done < <(ldd "$target/$bin" | awk '{print $1}')
  echo "images: $bin links only glibc and libgcc_s (distroless cc-debian12)" >&2
done

check_bin='
import json, sys
pkg, bin = sys.argv[1], sys.argv[2]
m = json.load(sys.stdin)
ok = any(p["name"] == pkg and any(t["name"] == bin and "bin" in t["kind"] for t in p["targets"])
         for p in m["packages"] if p["id"] in m["workspace_members"])
sys.exit(0 if ok else 1)
'
ctx=$(mktemp -d); trap 'rm -rf "$ctx" "$ctx.err"' EXIT
for df in images/*/Dockerfile; do
  ignore="$df.dockerignore"
  [[ -f "$ignore" ]] || fail "$ignore missing"
  rm -rf "${ctx:?}"/*
  # the allowlist of Dockerfile.dockerignore: "*", then "!path" lines; **/target stays out
  while read -r line; do
    [[ "$line" == '!'* ]] || continue
    path=${line#!}
    [[ -e "$path" ]] || fail "$ignore lets in $path, which does not exist"
    tar -C . --exclude=target -cf - "$path" | tar -C "$ctx" -xf -
  done < "$ignore"
  # fetch first: `cargo metadata` reads the manifest of every package in the lockfile, including those of
  # other platforms that a host build never downloads, so --offline alone passes only where an earlier
  # build happened to cache them. --locked on both: a lockfile that does not match the manifests fails.
  fetched=$(cd "$ctx" && cargo fetch --locked 2>&1) \
    || fail "the build context of $df does not fetch with the committed Cargo.lock: $fetched"
  # stdout only: cargo's notes on stderr (e.g. "Blocking waiting for file lock" while another cargo
  # runs) are not part of the JSON
  meta=$(cd "$ctx" && cargo metadata --locked --offline --format-version 1 2>"$ctx.err") \
    || fail "the build context of $df does not resolve: $(cat "$ctx.err")"
  read -r pkg bin < <(sed -n 's/.*cargo build .* -p \([a-z-]*\) --bin \([a-z-]*\).*/\1 \2/p' "$df")
  [[ -n "${pkg:-}" && -n "${bin:-}" ]] || fail "$df: no 'cargo build ... -p PKG --bin BIN' line"
  python3 -c "$check_bin" "$pkg" "$bin" <<<"$meta" || fail "$df builds $pkg/$bin, which the workspace does not have"
  echo "images: $df: context resolves with Cargo.lock and has $pkg/$bin" >&2
done

# 3. the shipped duo-gateway holds no test kit. The test kit is its own crate (duo-testkit), which depends
#    on duo-runtime, so cargo cannot link it into duo-gateway (that would be a dependency cycle); this
#    checks the result anyway: duo-gateway built with the flags its Dockerfile uses names no symbol of the
#    test kit's crate, where duo-testbed (the test kit's binary) must name them, so the check can fail.
#    Rust's legacy symbol mangling spells a path as length-prefixed names: 11duo_testkit is the test kit's
#    crate, 3pki8generate duo-core's test certificates (feature test-certificates).
testkit_symbols='11duo_testkit|3pki8generate'
count_testkit() { { grep -a -o -E "$testkit_symbols" "$1" || true; } | wc -l; }
flags=$(sed -n 's/.*cargo build \(.*-p duo-runtime --bin duo-gateway[^\\]*\)\\\?$/\1/p' images/duo-gateway/Dockerfile | xargs)
[[ -n "$flags" ]] || fail "images/duo-gateway/Dockerfile: no 'cargo build ... -p duo-runtime --bin duo-gateway' line"
cargo build $flags >&2
cargo build --release --locked -p duo-testkit --bin duo-testbed >&2
dev=$(count_testkit "$target/duo-testbed")
((dev > 0)) || fail "duo-testbed names no test kit symbol: the check below could not fail"
n=$(count_testkit "$target/duo-gateway")
"$target/duo-gateway" demo --once >/dev/null 2>&1 && fail "the image's duo-gateway runs the demo: it holds the test kit"
((n == 0)) || fail "duo-gateway as images/duo-gateway/Dockerfile builds it ($flags) names $n test kit symbols"
echo "images: duo-gateway as the Dockerfile builds it ($flags) holds no test kit (duo-testbed names $dev test kit symbols)" >&2
