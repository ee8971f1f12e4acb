#!/usr/bin/env bash
# Every check of the project, as jobs: `ci/ci.sh <job>...`, or `ci/ci.sh all`.
#   fmt        rustfmt, check mode
#   clippy     clippy -D warnings on every target of the workspace, the board and the fuzz crate
#   doc        rustdoc -D warnings on the workspace (broken links, stray HTML in docs)
#   test       the workspace's tests (unit, proptest, Wycheproof, rcgen/webpki and openssl
#              differential tests, CLI tests)
#   fleet      the fleet simulation (100,000 devices, 7 days): peak-to-mean CA load <= 1.5
#   demo       `sigil demo --once`: the mesh script, exit 0 only if every step held
#   nostd      sigil-core for thumbv7em-none-eabihf (with and without its features), the
#              reference firmware linked with no allocator, and the real MCU board (nRF52840
#              DK, build only) with one copy of each crypto crate
#   qemu       the firmware's first scenario under qemu-system-arm (mps2-an386), then the
#              instruction counts per operation (ci/qemu-bench.sh, -icount)
#   e2e        the edge device end to end under QEMU: Sentry, sidecar, app and relay on the
#              host, identity, two rotations, mTLS calls, a foreign chain refused; then the
#              same with Ed25519 credentials and the firmware's ed25519 feature
#   fuzz       a short cargo-fuzz run of every target (nightly), from its seeds and the corpus
#              that ci/fuzz-long.sh minimised after 10 million executions
#   k8s        Kubernetes mode against a real kube-apiserver (ci/k8s-e2e.sh): Secret store,
#              racing replicas, replacement under load, RBAC, real tokens, sidecar failover
#   size       the size report (flash, RAM, stack)
# Environment: FUZZ_SECONDS (default 20 per target), ROTATION_SIM_CASES (default 1000),
# PROPTEST_CASES (proptest's own).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# No incremental caches in CI runs: they double the target directory and a run never reuses them.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
board=boards/qemu-mps2-an386
mcu=boards/nrf52840-dk
# What the boards share (a library, built for the boards' target).
common=boards/common

job_fmt() {
  cargo fmt --all -- --check
  (cd "$board" && cargo fmt -- --check)
  (cd "$mcu" && cargo fmt -- --check)
  (cd "$common" && cargo fmt -- --check)
  (cd core/fuzz && cargo fmt -- --check)
}

job_clippy() {
  cargo clippy --workspace --all-targets --locked -- -D warnings
  (cd "$board" && cargo clippy --release --locked -- -D warnings)
  (cd "$mcu" && cargo clippy --release --locked -- -D warnings)
  (cd "$common" && cargo clippy --release --locked --target thumbv7em-none-eabihf -- -D warnings)
}

job_doc() {
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked
}

test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT

job_test() {
  set -o pipefail
  # The rotation simulation's property test runs 1,000 random fault schedules here.
  # The k8s_ tests need a real API server: the k8s job runs them.
  ROTATION_SIM_CASES="${ROTATION_SIM_CASES:-1000}" cargo test --workspace --locked -- --skip k8s_ 2>&1 | tee "$test_log"
}

job_k8s() {
  set -o pipefail
  bash ci/k8s-e2e.sh 2>&1 | tee -a "$test_log"
}

# The closing line: every cargo test binary's counts, summed.
test_summary() {
  [ -s "$test_log" ] || return 0
  awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
       END { printf "tests: %d passed, %d failed\n", p, f }' "$test_log"
}

job_fleet() {
  local last
  last=$(cargo run -q --locked -p sigil-tests --bin fleet-sim -- --devices 100000 --days 7 | tail -1)
  echo "$last"
  awk -F= '{ exit !($2 <= 1.5) }' <<<"$last"
}

job_demo() {
  cargo run -q --locked -p sigil-host --bin sigil -- demo --once
}

job_nostd() {
  cargo build -p sigil-core --locked --target thumbv7em-none-eabihf
  cargo build -p sigil-core --locked --target thumbv7em-none-eabihf --features ed25519
  cargo build -p sigil-core --locked --target thumbv7em-none-eabihf --features tls
  for b in "$board" "$mcu"; do
    (
      cd "$b"
      cargo build --release --locked
      # One copy of each crypto crate in the image (cortex-m's embedded-hal/nb pairs aside).
      local dups
      dups=$(cargo tree -d --locked -e normal)
      if grep -E '^(p256|ecdsa|sha2|rand_core|der|spki|signature|elliptic-curve|hmac|embedded-tls) ' <<<"$dups"; then
        echo "duplicate crypto crates in the $b image" >&2
        exit 1
      fi
    )
  done
  for image in identity agent; do
    echo "$mcu $image (opt s):"
    arm-none-eabi-size -A "$mcu"/target/thumbv7em-none-eabihf/release/$image | grep -E '^\.(vector_table|text|rodata|data|bss) '
  done
}

job_qemu() {
  bash ci/qemu.sh
  bash ci/qemu-bench.sh
}

job_e2e() {
  bash ci/qemu-e2e.sh
  SIGIL_E2E_KEY_ALGORITHM=ed25519 bash ci/qemu-e2e.sh
}

job_fuzz() {
  local secs="${FUZZ_SECONDS:-20}"
  for target in cert csr pem chain link deframer acl h2_authority; do
    local corpus
    corpus="$(mktemp -d)"
    cp core/fuzz/seeds/"$target"/* "$corpus"/
    # The minimised corpus of the last long run (ci/fuzz-long.sh: 10 million executions each).
    cp core/fuzz/corpus/"$target"/* "$corpus"/
    (cd core && cargo +nightly fuzz run "$target" "$corpus" -- -max_total_time="$secs" -max_len=4096)
    rm -rf "$corpus"
  done
}

job_size() {
  bash ci/size-report.sh
}

run() {
  local job="$1"
  echo "=== ci: $job ==="
  local start=$SECONDS
  "job_$job"
  echo "=== ci: $job ok ($((SECONDS - start))s; disk free $(df -Ph . | awk 'NR==2 {print $4}')) ==="
}

[ $# -gt 0 ] || set -- all
# A full run writes about 6 GB (target directories, the kube-apiserver build, fuzz corpora).
echo "=== ci: disk free at start: $(df -Ph . | awk 'NR==2 {print $4}') ==="
for job in "$@"; do
  if [ "$job" = all ]; then
    for j in fmt clippy doc test k8s fleet demo nostd qemu e2e fuzz size; do run "$j"; done
  else
    run "$job"
  fi
done
test_summary
