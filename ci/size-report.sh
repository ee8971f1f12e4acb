#!/usr/bin/env bash
# Flash, RAM and peak stack of the reference firmware, and the core's own share of flash.
#   flash = .vector_table + .text + .rodata    ram = .data + .bss    stack = painted peak
# Three images per opt-level: `identity` (every step), `identity` without the feature
# `rotation` (the identity primitives only: CSR and path validation) and `empty` (startup and
# semihosting). "core" is primitives minus empty: sigil-core's primitives with the RustCrypto
# P-256 code they pull in, plus the scenario's own glue. "rotation" is what the rotation machine
# and the identity slot add on top. The last two lines are machine-readable.
set -euo pipefail
cd "$(dirname "$0")/../boards/qemu-mps2-an386"

section_sum() { # elf, sections...
  local elf=$1; shift
  arm-none-eabi-size -A "$elf" | awk -v want="$*" '
    BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) keep[w[i]] = 1 }
    ($1 in keep) { s += $2 } END { print s + 0 }'
}
stack_peak() { # elf
  timeout 120 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none \
    -semihosting-config enable=on,target=native -kernel "$1" | sed -n 's/^stack_peak=//p'
}

printf '%-4s %-12s %10s %10s %10s\n' opt image flash ram stack
for opt in z s; do
  profile=release; [ "$opt" = z ] && profile=release-z
  cargo build --profile "$profile" --locked -q --bins
  cargo build --profile "$profile" --locked -q --bin identity --no-default-features \
    --target-dir target/primitives
  for variant in identity primitives empty; do
    case $variant in
      identity) elf=target/thumbv7em-none-eabihf/$profile/identity ;;
      primitives) elf=target/primitives/thumbv7em-none-eabihf/$profile/identity ;;
      empty) elf=target/thumbv7em-none-eabihf/$profile/empty ;;
    esac
    flash=$(section_sum "$elf" .vector_table .text .rodata)
    ram=$(section_sum "$elf" .data .bss)
    stack=-
    [ "$variant" = empty ] || stack=$(stack_peak "$elf")
    eval "${variant}_flash_$opt=$flash ${variant}_ram_$opt=$ram ${variant}_stack_$opt=$stack"
    printf '%-4s %-12s %10s %10s %10s\n' "$opt" "$variant" "$flash" "$ram" "$stack"
  done
done
# What the Ed25519 feature (Dapr >= 1.18 chains) would add to the image.
cargo build --profile release-z --locked -q --bin identity --features ed25519 --target-dir target/ed25519
ed_flash=$(section_sum target/ed25519/thumbv7em-none-eabihf/release-z/identity .vector_table .text .rodata)
printf '%-4s %-12s %10s   (feature ed25519: +%s bytes)\n' z "identity+ed" "$ed_flash" "$((ed_flash - identity_flash_z))"
echo
for opt in z s; do
  eval "f=\$identity_flash_$opt p=\$primitives_flash_$opt r=\$identity_ram_$opt pr=\$primitives_ram_$opt"
  eval "st=\$identity_stack_$opt pst=\$primitives_stack_$opt"
  echo "rotation+slot opt=$opt flash=+$((f - p)) ram=+$((r - pr)) stack=+$((st - pst))"
done
for opt in s z; do
  eval "p=\$primitives_flash_$opt e=\$empty_flash_$opt pst=\$primitives_stack_$opt"
  echo "primitives opt=$opt core flash=$((p - e)) stack=$pst"
done
echo "image flash=$identity_flash_s ram=$identity_ram_s stack=$identity_stack_s"
echo "core flash=$((primitives_flash_z - empty_flash_z))"
