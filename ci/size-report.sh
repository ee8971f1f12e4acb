#!/usr/bin/env bash
# Flash, RAM and peak stack of the reference firmware, and the core's own share of flash.
#   flash = .vector_table + .text + .rodata    ram = .data + .bss    stack = painted peak
# "core" is the identity image minus the empty image of the same board (startup, semihosting):
# that is sigil-core with the RustCrypto P-256 code it pulls in, plus the scenario's own glue.
# The last lines are machine-readable.
set -euo pipefail
cd "$(dirname "$0")/../boards/qemu-mps2-an386"
target=target/thumbv7em-none-eabihf

section_sum() { # elf, sections...
  local elf=$1; shift
  arm-none-eabi-size -A "$elf" | awk -v want="$*" '
    BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) keep[w[i]] = 1 }
    ($1 in keep) { s += $2 } END { print s + 0 }'
}

printf '%-8s %-10s %10s %10s %10s\n' opt image flash ram stack
declare -A core_flash
for opt in z s; do
  profile=release; [ "$opt" = z ] && profile=release-z
  cargo build --profile "$profile" --locked -q --bins
  dir=$target/$profile
  for bin in identity empty; do
    elf=$dir/$bin
    flash=$(section_sum "$elf" .vector_table .text .rodata)
    ram=$(section_sum "$elf" .data .bss)
    stack=-
    if [ "$bin" = identity ]; then
      stack=$(timeout 120 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none \
        -semihosting-config enable=on,target=native -kernel "$elf" | sed -n 's/^stack_peak=//p')
      eval "flash_$opt=$flash ram_$opt=$ram stack_$opt=$stack"
    else
      eval "empty_$opt=$flash"
    fi
    printf '%-8s %-10s %10s %10s %10s\n' "$opt" "$bin" "$flash" "$ram" "$stack"
  done
done
# What the Ed25519 feature (Dapr >= 1.18 chains) would add to the image.
cargo build --profile release-z --locked -q --bin identity --features ed25519 --target-dir target/ed25519
ed_flash=$(section_sum target/ed25519/thumbv7em-none-eabihf/release-z/identity .vector_table .text .rodata)
printf '%-8s %-10s %10s   (feature ed25519: +%s bytes)\n' z "identity+ed" "$ed_flash" "$((ed_flash - flash_z))"
core_z=$((flash_z - empty_z))
core_s=$((flash_s - empty_s))
echo
echo "core flash=$core_z opt=z"
echo "core flash=$core_s opt=s"
echo "image flash=$flash_s ram=$ram_s stack=$stack_s"
