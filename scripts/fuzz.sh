#!/usr/bin/env bash
# Fuzzes the readers of hostile input (fuzz/, cargo-fuzz + libFuzzer with AddressSanitizer, nightly
# toolchain): the SOAP request readers of ITI-18/38, ITI-39/43 and RAD-69/75, the Mitz closed- and
# open-question answer readers, the XUA assertion reader and the MTOM readers (requests, and the streaming
# reader of peers' retrieve answers with the relay behind it). What each target asserts: fuzz/src/lib.rs.
#
# Usage: scripts/fuzz.sh [--seconds N] [--jobs J] [target...]   long runs (default 600 s per target)
#        scripts/fuzz.sh --ci                                   the bounded run of scripts/test.sh
#        scripts/fuzz.sh --seeds                                rewrite fuzz/seeds/ from the test messages
#
# Every target starts from the committed seeds (fuzz/seeds/<target>) and the corpus earlier runs grew
# (fuzz/corpus/<target>, not committed). Prints a table: target, seconds run, executions, result. Exits
# non-zero when a target crashed (panic, failed assertion, sanitizer report), ran out of memory
# (-rss_limit_mb / -malloc_limit_mb), or took longer than -timeout on one input; the input that did it is
# kept in fuzz/artifacts/<target>/ and the table says how to replay it.
#
# Environment: DUO_FUZZ_TARGET_DIR (build folder, default fuzz/target), DUO_FUZZ_CI_SECONDS (per target
# in --ci, default 40), DUO_CARGO_FUZZ (cargo-fuzz binary; scripts/setup.sh writes it to .tools/env).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
jobs=2
mode=run
targets=()
while (($#)); do
  case $1 in
    --ci) mode=ci; seconds=${DUO_FUZZ_CI_SECONDS:-40}; shift ;;
    --seconds) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --seeds) mode=seeds; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

# libFuzzer limits: inputs up to 64 KiB (the seeds are smaller; the readers' own limits are far above, so
# a finding is the code's, not a limit's); no single allocation above 64 MiB (a thousandfold an input:
# amplification), 1.5 GiB resident at most (AddressSanitizer's own overhead included); 10 s per input.
FUZZ_FLAGS=(-max_len=65536 -malloc_limit_mb=64 -rss_limit_mb=1536 -timeout=10 -print_final_stats=1)

if [[ -f .tools/env ]]; then
  # shellcheck disable=SC1091
  source .tools/env
fi
cargo_fuzz=${DUO_CARGO_FUZZ:-$(command -v cargo-fuzz || true)}
if [[ -z $cargo_fuzz || ! -x $cargo_fuzz ]]; then
  echo "fuzz: cargo-fuzz not found; run scripts/setup.sh first (it installs it and writes .tools/env)" >&2
  exit 1
fi
export PATH="$(dirname "$cargo_fuzz"):$PATH"
target_dir=${DUO_FUZZ_TARGET_DIR:-$PWD/fuzz/target}
# the seed writer is an ordinary (stable, uninstrumented) build: it shares the workspace's target folder
workspace_target_dir=${CARGO_TARGET_DIR:-$PWD/target}
# the workspace's CARGO_TARGET_DIR must not take in the instrumented build
unset CARGO_TARGET_DIR
log() { echo "fuzz: $*" >&2; }

if [[ $mode == seeds ]]; then
  log "writing fuzz/seeds from the test messages and codecs"
  nice -n 10 cargo run --quiet --release --manifest-path fuzz/Cargo.toml \
    --target-dir "$workspace_target_dir" --example seeds
  nice -n 10 cargo +nightly fuzz build --fuzz-dir fuzz --target-dir "$target_dir"
  for dir in fuzz/seeds/*/; do
    t=$(basename "$dir")
    log "minimising seeds of $t"
    tmp=$(mktemp -d)
    mv "$dir"* "$tmp"/
    nice -n 10 cargo +nightly fuzz cmin --fuzz-dir fuzz --target-dir "$target_dir" "$t" "$tmp" \
      -- "${FUZZ_FLAGS[@]}" >/dev/null 2>&1 || true
    mv "$tmp"/* "$dir" 2>/dev/null || true
    rm -rf "$tmp"
    echo "$t: $(ls "$dir" | wc -l) seeds, $(du -sk "$dir" | cut -f1) KiB"
  done
  exit 0
fi

all=$(cargo +nightly fuzz list --fuzz-dir fuzz)
if ((${#targets[@]} == 0)); then
  mapfile -t targets <<<"$all"
fi
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$all" || { log "no target $t (targets: $(echo $all))"; exit 2; }
done

start=$(date +%s)
log "building ${#targets[@]} targets (nightly, AddressSanitizer, debug assertions) in $target_dir"
nice -n 10 cargo +nightly fuzz build --fuzz-dir fuzz --target-dir "$target_dir" >&2
bin_dir="$target_dir/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
log "built in $(($(date +%s) - start)) s; running each target ${seconds} s, $jobs at once"

logs=fuzz/logs
mkdir -p "$logs"
run_one() {
  local t=$1 from dirs
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  # past findings (fuzz/regressions/<target>, kept apart so `--seeds` minimising cannot drop them) are
  # run first with the seeds: each run, --ci included, checks that they stay fixed
  dirs=("fuzz/corpus/$t" "fuzz/seeds/$t")
  [[ -d fuzz/regressions/$t ]] && dirs+=("fuzz/regressions/$t")
  from=$(date +%s)
  set +e
  nice -n 10 "$bin_dir/$t" "${dirs[@]}" "${FUZZ_FLAGS[@]}" \
    -max_total_time="$seconds" -artifact_prefix="fuzz/artifacts/$t/" >"$logs/$t.log" 2>&1
  echo "$? $(($(date +%s) - from))" >"$logs/$t.status"
  set -e
}
running=0
for t in "${targets[@]}"; do
  rm -f "$logs/$t.status"
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait || true

failed=0
printf '\n%-24s %8s %14s  %s\n' target seconds executions result
for t in "${targets[@]}"; do
  read -r rc took <"$logs/$t.status" || { rc=99; took=0; }
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  if [[ -z $execs ]]; then
    execs=$(grep -o '^#[0-9]*' "$logs/$t.log" | tail -1 | tr -d '#')
  fi
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logs/$t.log" | tail -1)
  if ((rc == 0)); then
    result=clean
  else
    failed=1
    kind=crash
    grep -q 'ERROR: libFuzzer: out-of-memory\|malloc(.*) exceeds limit\|rss limit' "$logs/$t.log" && kind=out-of-memory
    grep -q 'ERROR: libFuzzer: timeout' "$logs/$t.log" && kind=timeout
    grep -q 'ERROR: LeakSanitizer' "$logs/$t.log" && kind=leak
    result="$kind: ${artifact:-see $logs/$t.log}"
  fi
  printf '%-24s %8s %14s  %s\n' "$t" "$took" "${execs:-?}" "$result"
done
echo "total wall time $(($(date +%s) - start)) s (build included); logs in $logs/"
if ((failed)); then
  echo "fuzz: a target failed. Replay an input with: $bin_dir/<target> <file>; the panic message and stack are in $logs/<target>.log" >&2
  grep -h -A12 "panicked at\|ERROR: " "$logs"/*.log | head -60 >&2 || true
  exit 1
fi
