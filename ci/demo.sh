#!/usr/bin/env bash
# The README's main command: set-up, then `sigil demo` — Sentry, two sidecars and two apps on
# loopback, live: identities issued, calls over mutual TLS, rotations, a root replacement.
# Ctrl-C stops it. Arguments go to `sigil demo` (`--once`: about 45 s, exit 0 only if every
# step held and no call failed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash ci/setup.sh demo
cargo build --release --locked -q -p sigil-host --bin sigil
exec "$root/target/release/sigil" demo "$@"
