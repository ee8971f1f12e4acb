#!/usr/bin/env bash
# Where the device image's flash goes: code and read-only data by crate, then the largest
# functions (arm-none-eabi-nm over the opt "z" image; symbols demangled). A symbol is charged
# to the crate of its path (`p256::…`), or for a trait impl to the crate of the type it is for
# (`<sigil_core::key::SoftwareKey as signature::Signer>::sign` → sigil_core), or to the trait's
# crate when that type is generic (`<&T as core::fmt::Debug>::fmt` → core). Anonymous constants
# (string literals, tables without a symbol) are "(unnamed)". Usage:
#   bash ci/size-by-crate.sh [elf]       (default: the device image at opt z, built if absent)
set -euo pipefail
cd "$(dirname "$0")/../boards/qemu-mps2-an386"
elf=${1:-target/thumbv7em-none-eabihf/release-z/device}
[ -f "$elf" ] || cargo build --profile release-z --locked -q --bin device
arm-none-eabi-nm -S --size-sort -C "$elf" | python3 -c '
import re, sys, collections
by_crate = collections.Counter()
functions = []
for line in sys.stdin:
    parts = line.split(None, 3)
    if len(parts) != 4 or parts[2] not in "tTrR":
        continue
    size, name = int(parts[1], 16), parts[3].strip()
    if name.startswith(".L") or name.startswith("__"):
        crate = "(unnamed)" if name.startswith(".L") else "(runtime)"
    else:
        m = re.match(r"<&?(?:mut )?([A-Za-z_][A-Za-z0-9_]*)::", name)
        generic = re.match(r"<&?(?:mut )?[A-Za-z_\[][A-Za-z0-9_\[\]; ]*(?:<[^>]*>)? as ([a-z_][a-z0-9_]*)::", name)
        plain = re.match(r"([a-z_][a-z0-9_]*)::", name)
        crate = (m or generic or plain).group(1) if (m or generic or plain) else name.split("::")[0][:30]
    by_crate[crate] += size
    if parts[2] in "tT":
        functions.append((size, name))
total = sum(by_crate.values())
print("%-24s %8s" % ("crate", "bytes"))
for crate, size in by_crate.most_common(18):
    print(f"{crate:<24} {size:>8}")
print("%-24s %8d   (the rest of the image is string literals and tables without a symbol)" % ("(all named)", total))
print()
print("largest functions:")
for size, name in sorted(functions, reverse=True)[:15]:
    print(f"{size:>8}  {name[:110]}")
'
