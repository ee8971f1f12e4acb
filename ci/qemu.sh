#!/usr/bin/env bash
# Builds the reference firmware and runs its scenario under QEMU (mps2-an386, Cortex-M4F).
# Exits with the firmware's semihosting exit code: 0 only if every step held. QEMU is always
# wrapped in `timeout` (a hard-float image on the wrong machine hangs instead of exiting).
set -euo pipefail
cd "$(dirname "$0")/../boards/qemu-mps2-an386"
cargo build --release --locked -q "$@"
elf=target/thumbv7em-none-eabihf/release/identity
start=$(date +%s%N)
set +e
timeout 120 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none \
  -semihosting-config enable=on,target=native -kernel "$elf"
status=$?
set -e
echo "qemu: exit $status after $((($(date +%s%N) - start) / 1000000)) ms (wall, emulated)"
exit $status
