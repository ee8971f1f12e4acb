#!/usr/bin/env bash
# The Python peer of the interop tests: a venv at the repo root (.venv) with
# tests/interop/requirements.txt installed, and the Python stubs of Sentry's gRPC API
# generated from host/proto into target/python-stubs/.
#
# Idempotent and fast when nothing changed: pip runs only when the stamp in the venv does not
# match the requirements (and the Python version); protoc runs only when the stubs are missing
# or older than the proto.
#
# Progress goes to stderr; the last line on stdout is the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

venv="$root/.venv"
py="$venv/bin/python"
req="tests/interop/requirements.txt"
stubs="$root/target/python-stubs"
proto="dapr/proto/sentry/v1/sentry.proto"

log() { echo "python-venv: $*" >&2; }

# One at a time: tests running in parallel all call this, and two pip installs into one venv
# corrupt it (seen in CI: pip crashing on a half-installed package's metadata).
mkdir -p "$root/target"
exec 9>"$root/target/.python-venv.lock"
flock 9

command -v python3 >/dev/null || { log "python3 not found"; exit 1; }

# The venv module (and ensurepip, which venv needs for pip) may be split off on Debian.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing python3-venv"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q python3-venv >&2 \
            || { apt-get update -q >&2 && apt-get install -y -q python3-venv >&2; }
    else
        log "python3's venv module is missing (install python3-venv)"
        exit 1
    fi
fi

# A venv that does not run (half-made, or its python moved) is made anew.
if [ -x "$py" ] && ! "$py" -c 'import sys' >/dev/null 2>&1; then
    log "removing a broken .venv"
    rm -rf "$venv"
fi
if [ ! -x "$py" ]; then
    log "creating .venv"
    python3 -m venv "$venv" >&2
fi

stamp="$venv/.interop-requirements.sha256"
want="$( { cat "$req"; "$py" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing $req"
    rm -f "$stamp"
    "$py" -m pip install -q --disable-pip-version-check -r "$req" >&2
    echo "$want" >"$stamp"
fi

out="$stubs/dapr/proto/sentry/v1"
if [ ! -f "$out/sentry_pb2.py" ] || [ ! -f "$out/sentry_pb2_grpc.py" ] \
    || [ "host/proto/$proto" -nt "$out/sentry_pb2.py" ] || [ "$stamp" -nt "$out/sentry_pb2.py" ]; then
    log "generating stubs in target/python-stubs"
    mkdir -p "$stubs"
    "$py" -m grpc_tools.protoc -I host/proto --python_out="$stubs" --grpc_python_out="$stubs" "$proto" >&2
fi

echo "$py"
