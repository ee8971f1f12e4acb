#!/usr/bin/env bash
# The edge device end to end, every CI run: a real Sentry, a sidecar in front of an app, and
# `sigil relay` on the host; the `device` firmware under QEMU (mps2-an386) on the other side
# of the emulated UART. The device gets an identity (20 s TTL), validates and installs it,
# calls the app through the sidecar over mutual TLS (embedded-tls, verified by the core),
# rotates calling again each time. Sentry's root and issuer live 60 s and Sentry rotates them
# by itself (a new root every 30 s): the device, the relay and the sidecar were given the first
# root only, learn each new one from Sentry's answers, and the device calls with an identity
# under a root it was never provisioned with. Then this script swaps the relay for one backed
# by a foreign Sentry (same trust domain, another root): the device must refuse that chain
# (and its roots), keep its identity and call once more with it. Exit 0 only if the firmware
# exits 0.
#
# The device's TLS sessions go in turn to an independent Go TLS server and to Sigil's sidecar,
# both holding the app's identity (the Go server from the sidecar's identity files). The Go
# server (tests/interop/go_tls_peer: Go's crypto/tls and crypto/x509) authorises clients as
# daprd and go-spiffe do, with the intermediates the client sends, against Sentry's published
# roots: the device sends its chain, so both accept it; the Go server's log must show it
# accepted the device's chain more than once.
#
# With SIGIL_E2E_KEY_ALGORITHM=ed25519 both Sentrys make Ed25519 roots and issuers (as Dapr
# 1.18 does) and the firmware is built with the core's `ed25519` feature: the device validates
# Ed25519 chains (its own and the sidecar's) end to end. Its log goes to target/e2e-ed25519/.
#
#   bash ci/qemu-e2e.sh            (needs qemu-system-arm, python3, go; ci/setup.sh installs them)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

work="$(mktemp -d)"
chmod 700 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Up to 5 s to stop, then SIGKILL: nothing is left running, and nothing hangs the job.
  local i p alive
  for ((i = 0; i < 50; i++)); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ "${keep:-0}" = 1 ]; then echo "qemu-e2e: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

step() { echo "qemu-e2e: $*"; }
fail() {
  echo "qemu-e2e: FAILED: $*" >&2
  for f in "$work"/*.log; do
    echo "----- $(basename "$f") (last 40 lines)" >&2
    tail -n 40 "$f" >&2 || true
  done
  exit 1
}
# Waits up to $3 seconds for a line matching $2 in file $1; prints the first match.
wait_line() {
  local file=$1 pattern=$2 secs=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    if grep -m1 -E "$pattern" "$file" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

algorithm=${SIGIL_E2E_KEY_ALGORITHM:-p256}
case $algorithm in
  p256) features=(); logdir=boards/qemu-mps2-an386/target/e2e ;;
  ed25519) features=(--features ed25519); logdir=boards/qemu-mps2-an386/target/e2e-ed25519 ;;
  *) echo "qemu-e2e: SIGIL_E2E_KEY_ALGORITHM is p256 or ed25519, not $algorithm" >&2; exit 2 ;;
esac
# This run's log replaces the last one only if the run passes (ci/size-report.sh reads it).
rm -f "$logdir/device.log"

step "building sigil"
cargo build -q --locked -p sigil-host --bin sigil
sigil="$root/target/debug/sigil"

# Sentry issues 20 s identities with no back-dating (the device's no-RTC clock takes wall time
# from notBefore plus this skew, provisioned into the image below).
cat > "$work/sentry.yaml" <<'EOF'
kind: Configuration
spec:
  mtls:
    workloadCertTTL: 20s
    allowedClockSkew: 0s
EOF

start_sentry() { # name [more flags]
  local name=$1
  shift
  "$sigil" sentry "$@" --key-algorithm "$algorithm" \
    --issuer-credentials "$work/$name" --config "$work/sentry.yaml" \
    --trust-domain localhost --port 0 --listen-address 127.0.0.1 \
    --healthz-port 0 --healthz-listen-address 127.0.0.1 \
    --metrics-port 0 --metrics-listen-address 127.0.0.1 --log-level warn \
    > "$work/$name.log" 2>&1 &
  pids+=($!)
  wait_line "$work/$name.log" '^sentry: listening grpc=' 30 > /dev/null || fail "$name did not start"
}
sentry_address() { sed -n 's/^sentry: listening grpc=\([^ ]*\).*/\1/p' "$work/$1.log" | head -n1; }
step "starting Sentry and a foreign Sentry (same trust domain, another root)"
# Roots and issuers of 60 s, rotated automatically: prepare at 30 s, activate at 50 s, retire
# at 70 s, and again every 30 s (certificates of 20 s: every holder renews within one).
start_sentry sentry --root-ttl 60s --issuer-ttl 60s
start_sentry foreign
# What the sidecar and the relay are given: the first root only, not the live file.
cp "$work/sentry/ca.crt" "$work/first-root.pem"
sentry=$(sentry_address sentry)
foreign=$(sentry_address foreign)
[ -n "$sentry" ] && [ -n "$foreign" ] || fail "no Sentry address"
cmp -s "$work/sentry/ca.crt" "$work/foreign/ca.crt" && fail "the two Sentrys share a root"
# The credentials are of the kind asked for (openssl, an independent reader).
want=$([ "$algorithm" = ed25519 ] && echo ED25519 || echo id-ecPublicKey)
for f in sentry/ca.crt sentry/issuer.crt; do
  openssl x509 -in "$work/$f" -noout -text | grep -q "Public Key Algorithm: $want" \
    || fail "$f is not a $want certificate"
done

step "starting the app and its sidecar"
python3 tests/interop/echo_app.py > "$work/app.log" 2>&1 &
pids+=($!)
app_port=$(wait_line "$work/app.log" '^app: listening port=' 15 | sed -n 's/.*port=//p') \
  || fail "the app did not start"
"$sigil" sidecar --app-id echo --app-port "$app_port" --sentry-address "$sentry" \
  --trust-anchors-file "$work/first-root.pem" --identity-dir "$work/echo-identity" \
  --dapr-http-port 0 --dapr-grpc-port 0 --dapr-internal-port 0 --dapr-internal-address 127.0.0.1 \
  --metrics-port 0 --log-level warn > "$work/sidecar.log" 2>&1 &
pids+=($!)
internal=$(wait_line "$work/sidecar.log" '^sidecar: app' 60 | sed -n 's/.*internal=\([^ ]*\).*/\1/p') \
  || fail "the sidecar did not start"
[ -n "$internal" ] || fail "no sidecar internal address"

step "starting the Go TLS peer with the app's identity (the sidecar's identity files)"
GO111MODULE=off GOFLAGS= go build -o "$work/go_tls_peer" tests/interop/go_tls_peer/main.go \
  || fail "the Go TLS peer did not build (golang-go; ci/setup.sh installs it)"
for ((i = 0; i < 300; i++)); do
  [ -s "$work/echo-identity/cert.pem" ] && [ -s "$work/echo-identity/key.pem" ] && break
  sleep 0.1
done
[ -s "$work/echo-identity/cert.pem" ] || fail "the sidecar wrote no identity files in 30 s"
# Its client roots: Sentry's live ca.crt, the trust bundle it publishes (with the next root
# from the moment it is prepared), as a stock sidecar gets it.
"$work/go_tls_peer" -cert "$work/echo-identity/cert.pem" -key "$work/echo-identity/key.pem" \
  -roots "$work/sentry/ca.crt" -allow "spiffe://public/ns/default/device" \
  > "$work/go-peer.log" 2>&1 &
pids+=($!)
go_peer=$(wait_line "$work/go-peer.log" '^listening ' 30 | sed -n 's/^listening //p') \
  || fail "the Go TLS peer did not start"

step "building the device firmware with Sentry's root provisioned ($algorithm credentials)"
target_dir=target
[ "$algorithm" = ed25519 ] && target_dir=target/ed25519
elf=boards/qemu-mps2-an386/$target_dir/thumbv7em-none-eabihf/release-z/device
rm -f "$elf"
if ! (
  cd boards/qemu-mps2-an386
  SIGIL_ANCHORS="$work/first-root.pem" SIGIL_ISSUER_SKEW_SECS=0 SIGIL_APP_ID=device \
    SIGIL_PEER_APP=echo SIGIL_METHOD=hello \
    cargo build --profile release-z --locked -q --bin device --target-dir "$target_dir" ${features[@]+"${features[@]}"}
) > "$work/firmware-build.log" 2>&1; then
  fail "the device firmware did not build"
fi
[ -f "$elf" ] || fail "no device image"

serial=$(free_port)
step "running the device under QEMU (UART on 127.0.0.1:$serial)"
start=$(date +%s%N)
timeout 300 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none \
  -semihosting-config enable=on,target=native \
  -serial "tcp:127.0.0.1:$serial,server=on,wait=on" -kernel "$elf" > "$work/device.log" 2>&1 &
qemu=$!
pids+=($qemu)

start_relay() { # name sentry-address anchors
  "$sigil" relay --serial "127.0.0.1:$serial" --sentry "$2" --anchors "$3" --peer "$go_peer" --peer "$internal" \
    --app-id device --namespace default --log-level info > "$work/$1.log" 2>&1 &
  relay=$!
  pids+=($relay)
  wait_line "$work/$1.log" '^relay: connected' 30 > /dev/null || fail "$1 did not connect"
}
start_relay relay "$sentry" "$work/first-root.pem"
step "relay connected; waiting for the device's positive phase"

# The device announces its negative phase; then the foreign relay takes the UART.
for ((i = 0; i < 2400; i++)); do
  grep -q 'e2e: negative phase' "$work/device.log" && break
  kill -0 "$qemu" 2>/dev/null || break
  sleep 0.1
done
if grep -q 'e2e: negative phase' "$work/device.log"; then
  step "device asks for the negative phase: swapping in the foreign relay"
  kill "$relay"
  wait "$relay" 2>/dev/null || true
  start_relay foreign-relay "$foreign" "$work/foreign/ca.crt"
fi

set +e
wait "$qemu"
status=$?
set -e
elapsed=$((($(date +%s%N) - start) / 1000000))
cat "$work/device.log"
echo "qemu-e2e: QEMU exit $status after $elapsed ms"
[ "$status" = 0 ] || fail "device scenario failed (QEMU exit $status)"
grep -q '^ALL OK' "$work/device.log" || fail "device did not report ALL OK"
grep -q 'foreign_refused=[1-9]' "$work/device.log" || fail "no foreign chain refused"
grep -q 'anchors_adopted=[1-9]' "$work/device.log" || fail "Sentry's trust bundle never adopted"
grep -q 'new_root_calls=[1-9]' "$work/device.log" || fail "no call under a root the device was not given"
# The Go peer accepted the device's chain (leaf and issuer) with its SPIFFE ID, more than once.
go_accepted=$(grep -c '^accepted spiffe://public/ns/default/device chain=2$' "$work/go-peer.log" || true)
go_refused=$(grep -c '^refused ' "$work/go-peer.log" || true)
step "Go TLS peer: accepted=$go_accepted refused=$go_refused"
[ "$go_accepted" -ge 2 ] || fail "the Go TLS peer did not accept the device's chain twice"
# Sentry's own count of its rotation steps during the run.
metrics=$(sed -n 's/^sentry: listening .*metrics=\([^ ]*\).*/\1/p' "$work/sentry.log" | head -n1)
steps=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen("http://" + sys.argv[1] + "/metrics").read().decode())' "$metrics" \
  | grep '^sigil_sentry_ca_rotation_steps_total' || true)
echo "$steps" | sed 's/^/qemu-e2e: sentry /'
echo "$steps" | grep -q 'step="activate"} [1-9]' || fail "Sentry did not rotate its root during the run"
# The run's log, for ci/size-report.sh (the device image's stack peak) and the README's timing.
mkdir -p "$logdir"
cp "$work/device.log" "$logdir/device.log"
step "passed"
