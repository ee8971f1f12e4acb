#!/usr/bin/env bash
# A walkthrough of the pieces one at a time: set-up, then Sigil's identity primitives end to
# end on sample certificates made on the fly, Sentry and `sigil sign`, then the same core on an
# emulated Cortex-M4 (QEMU). (The README's main command is ci/demo.sh: the whole mesh, live.)
#
# 1. openssl plays the CA (a root and an issuer with Dapr's profiles).
# 2. `sigil csr new` makes a workload key and CSR as a Dapr sidecar does; openssl signs it into
#    a 24 h workload certificate with the SPIFFE ID, NotBefore back-dated 15 minutes.
# 3. `sigil cert inspect` shows it; `sigil cert verify` validates it as a peer would, then
#    shows three precise refusals (wrong SPIFFE ID, expired, foreign root).
# 4. Sentry, the CA: `sigil sentry` generates its root and issuer, `sigil sign` gets a workload
#    certificate over Dapr's gRPC API (TLS, Sentry's SPIFFE ID checked), openssl verifies it.
# 5. The firmware builds a CSR, validates a chain and runs the rotation machine on the
#    emulated MCU, with no heap.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash ci/setup.sh demo
cargo build --release --locked -q -p sigil-host --bin sigil
sigil="$root/target/release/sigil"
work="$(mktemp -d "${TMPDIR:-/tmp}/sigil-demo.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
td=localhost
id="spiffe://$td/ns/default/demo-app"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "A CA, as Sentry makes it: root O=$td, issuer O=spiffe://$td/ns/default/dapr-sentry"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
  -subj "/O=$td" -days 365 -addext "basicConstraints=critical,CA:true" \
  -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout issuer.key -out issuer.csr \
  -subj "/O=spiffe:\/\/$td\/ns\/default\/dapr-sentry" 2>/dev/null
printf 'basicConstraints=critical,CA:true\nkeyUsage=critical,digitalSignature,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >issuer.ext
openssl x509 -req -in issuer.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile issuer.ext -out issuer.crt 2>/dev/null
echo "ca.crt and issuer.crt written"

step "sigil csr new: a P-256 key and a CSR with empty subject and the SPIFFE ID"
"$sigil" csr new --key app.key --out app.csr --spiffe-id "$id"
ls -l app.key | awk '{print "key file mode: " $1}'
openssl req -in app.csr -noout -verify

step "The CA signs it: 24 h, SAN critical, EKU server+client (back-dated 15 min where openssl can)"
printf 'subjectAltName=critical,URI:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nauthorityKeyIdentifier=keyid\n' "$id" >app.ext
nb=$(date -u -d '-15 min' +%Y%m%d%H%M%SZ)
na=$(date -u -d '+24 hours' +%Y%m%d%H%M%SZ)
openssl x509 -req -in app.csr -CA issuer.crt -CAkey issuer.key -CAcreateserial \
  -not_before "$nb" -not_after "$na" -extfile app.ext -out app.crt 2>/dev/null ||
  openssl x509 -req -in app.csr -CA issuer.crt -CAkey issuer.key -CAcreateserial -days 1 -extfile app.ext -out app.crt 2>/dev/null
cat app.crt issuer.crt >chain.pem

step "sigil cert inspect chain.pem"
"$sigil" cert inspect chain.pem

step "sigil cert verify: as a peer sidecar checks it (clientAuth, exact SPIFFE ID)"
"$sigil" cert verify --anchors ca.crt --intermediates chain.pem --leaf chain.pem --usage client --spiffe-id "$id" --skew 15m

step "Refused: a different SPIFFE ID"
"$sigil" cert verify --anchors ca.crt --intermediates chain.pem --leaf chain.pem --spiffe-id "spiffe://$td/ns/default/other" && exit 1 || echo "(exit $?)"

step "Refused: checked two days from now"
"$sigil" cert verify --anchors ca.crt --intermediates chain.pem --leaf chain.pem --at "$(date -u -d '+2 days' +%Y-%m-%dT%H:%M:%SZ)" && exit 1 || echo "(exit $?)"

step "Refused: a foreign root"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.crt -subj "/O=$td" -days 365 \
  -addext "basicConstraints=critical,CA:true" 2>/dev/null
"$sigil" cert verify --anchors other.crt --intermediates chain.pem --leaf chain.pem && exit 1 || echo "(exit $?)"

step "Sentry: a CA on loopback that generates its credentials (Dapr's files and profiles)"
"$sigil" sentry --issuer-credentials sentry-creds --port 0 --listen-address 127.0.0.1 \
  --healthz-port 0 --healthz-listen-address 127.0.0.1 --metrics-port 0 \
  --metrics-listen-address 127.0.0.1 --log-level warn >sentry.out 2>sentry.err &
sentry_pid=$!
trap 'kill "$sentry_pid" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "listening" sentry.out 2>/dev/null && break; sleep 0.1; done
sed 's/^/  /' sentry.out
grpc=$(sed -n 's/.*listening grpc=\([^ ]*\).*/\1/p' sentry.out)
metrics=$(sed -n 's/.*metrics=\([^ ]*\).*/\1/p' sentry.out)

step "sigil sign: a sidecar's key and CSR, signed over gRPC, validated, written (key 0600)"
"$sigil" sign --sentry "$grpc" --anchors sentry-creds/ca.crt --id checkout --namespace shop --out-dir checkout
openssl verify -CAfile sentry-creds/ca.crt -untrusted checkout/cert.pem checkout/cert.pem
"$sigil" cert inspect checkout/cert.pem | head -12

step "Refused by Sentry: an app ID with a dot (Dapr's PermissionDenied)"
"$sigil" sign --sentry "$grpc" --anchors sentry-creds/ca.crt --id bad.app --out-dir bad && exit 1 || echo "(exit $?)"

step "Sentry's metrics (Dapr's names)"
curl -s "http://$metrics/metrics" | grep -E '^dapr_sentry_(cert_sign|issuercert)' || true
kill "$sentry_pid"; wait "$sentry_pid" 2>/dev/null || true

step "The same core on an emulated Cortex-M4 (mps2-an386, no heap): CSR, chains, rotation"
cd "$root"
bash ci/qemu.sh
step "demo: all steps held"
