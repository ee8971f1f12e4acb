#!/usr/bin/env bash
# The long fuzz run: every cargo-fuzz target run to FUZZ_RUNS executions (default 10 million)
# from its seeds and the committed corpus, then the corpus minimised (libFuzzer's -merge=1) and
# written back to core/fuzz/corpus/<target>, which CI's short run starts from.
#   bash ci/fuzz-long.sh [target...]      # default: every target
# Prints one line per target: executions, seconds, exec/s, corpus files and bytes, coverage.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/core"
runs="${FUZZ_RUNS:-10000000}"
[ $# -gt 0 ] || set -- cert csr pem chain link deframer acl h2_authority
cargo +nightly fuzz build >/dev/null 2>&1 || cargo +nightly fuzz build
for target in "$@"; do
  work="$(mktemp -d)"
  merged="$(mktemp -d)"
  log="$(mktemp)"
  cp fuzz/seeds/"$target"/* "$work"/
  if [ -d fuzz/corpus/"$target" ]; then cp fuzz/corpus/"$target"/* "$work"/ 2>/dev/null || true; fi
  start=$SECONDS
  cargo +nightly fuzz run "$target" "$work" -- -runs="$runs" -max_len=4096 -print_final_stats=1 \
    >"$log" 2>&1 || { tail -50 "$log"; exit 1; }
  secs=$((SECONDS - start))
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  cov=$(sed -nE 's/.* cov: ([0-9]+) .*/\1/p' <<<"$done_line")
  # Minimise: keep the smallest set of inputs with the same coverage.
  cargo +nightly fuzz run "$target" "$merged" "$work" -- -merge=1 -max_len=4096 >/dev/null 2>&1
  rm -rf fuzz/corpus/"$target"
  mkdir -p fuzz/corpus/"$target"
  cp "$merged"/* fuzz/corpus/"$target"/
  files=$(find fuzz/corpus/"$target" -type f | wc -l)
  bytes=$(du -sb fuzz/corpus/"$target" | awk '{print $1}')
  echo "fuzz-long: target=$target executions=$execs seconds=$secs exec_per_s=$((execs / (secs > 0 ? secs : 1))) coverage=$cov corpus_files=$files corpus_bytes=$bytes"
  rm -rf "$work" "$merged" "$log"
done
