#!/usr/bin/env bash
# The device's work per operation in instructions (boards/qemu-mps2-an386, image `bench`):
# QEMU with `-icount shift=0` advances the virtual clock 1 ns per instruction, and the image
# times each operation with SysTick, calibrated against a known instruction loop. Instruction
# counts, not Cortex-M4 cycles (QEMU is not cycle-accurate). Both opt-levels; prints the
# image's lines and exits with its status.
set -euo pipefail
cd "$(dirname "$0")/../boards/qemu-mps2-an386"
for opt in z s; do
  profile=release; [ "$opt" = z ] && profile=release-z
  cargo build --profile "$profile" --locked -q --bin bench
  echo "opt=$opt:"
  timeout 300 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none \
    -icount shift=0 -semihosting-config enable=on,target=native \
    -kernel "target/thumbv7em-none-eabihf/$profile/bench"
done
