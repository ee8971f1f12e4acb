#!/usr/bin/env bash
# The device's work per operation in instructions (boards/qemu-mps2-an386, image `bench`):
# QEMU with `-icount shift=0` advances the virtual clock 1 ns per instruction, and the image
# times each operation with SysTick, calibrated against a known instruction loop. Instruction
# counts, not Cortex-M4 cycles (QEMU is not cycle-accurate). Both opt-levels; prints the
# image's lines and exits with its status.
set -euo pipefail
cd "$(dirname "$0")/../boards/qemu-mps2-an386"
# The P-256 image at both opt-levels, then the image with Ed25519 chains (its line
# `ed25519_verify` appears only there).
for run in "z" "s" "z ed25519" "s ed25519"; do
  set -- $run
  opt=$1; features=${2:-}
  profile=release; [ "$opt" = z ] && profile=release-z
  cargo build --profile "$profile" --locked -q --bin bench ${features:+--features "$features"}
  echo "opt=$opt${features:+ features=$features}:"
  timeout 300 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none \
    -icount shift=0 -semihosting-config enable=on,target=native \
    -kernel "target/thumbv7em-none-eabihf/$profile/bench"
done
