#!/usr/bin/env bash
# Installs everything the checks need on a fresh machine of the project's kind (Debian, root,
# the Rust toolchain from rustup, network to the package registries only). Idempotent: what is
# already there is not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v qemu-system-arm >/dev/null || need_apt+=(qemu-system-arm)
command -v arm-none-eabi-size >/dev/null || need_apt+=(binutils-arm-none-eabi)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
# Go (Debian's golang-go; its standard library only, no module proxy) for the independent TLS
# peer (tests/interop/go_tls_peer) of host/tests/go_peer.rs and of the edge device's
# end-to-end run (ci/qemu-e2e.sh, which the README also gives on its own).
command -v go >/dev/null || need_apt+=(golang-go)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The pinned toolchain (rust-toolchain.toml) with the firmware targets.
rustup show active-toolchain >/dev/null
rustup target add thumbv7em-none-eabihf thumbv7m-none-eabi >/dev/null

# Nightly and cargo-fuzz for the fuzz smoke run (not needed for the demo).
if [ "${1:-}" = demo ]; then
  echo "setup: ok ($(qemu-system-arm --version | head -1); $(openssl version); $(go version))"
  exit 0
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo +stable install cargo-fuzz --locked --quiet
fi
# A real Kubernetes API server for the kubernetes-mode tests (host/tests/kubernetes.rs):
# built once from Debian's source package and cached outside the repository (about 5 min the
# first time, nothing after). kubectl comes with this machine's image; Debian's client if not.
if ! command -v kubectl >/dev/null; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq kubernetes-client >/dev/null
fi
bash ci/kube-setup.sh
echo "setup: ok ($(qemu-system-arm --version | head -1); $(openssl version); $(go version))"
