#!/usr/bin/env bash
# Starts a throwaway Kubernetes API server (kube-apiserver v1.20.2 from ci/kube-setup.sh, with
# Debian's etcd) on 127.0.0.1 for tests, and prints how to reach it.
#
#   eval "$(ci/kube-up.sh)"          start; stdout is only `export` lines, progress goes to stderr
#                                    (eval of an empty output succeeds: to stop on a failed start,
#                                    `out=$(ci/kube-up.sh) && eval "$out"`, or check the exit code)
#   ci/kube-up.sh --down "$SIGIL_KUBE_DIR"
#                                    stop both processes (TERM, then KILL after 10 s) and delete
#                                    the directory; safe to call twice or on a half-started one
#
# What it prints (values single-quoted), for example:
#   export SIGIL_KUBE_DIR='/tmp/sigil-kube.AbC123'         everything below lives here
#   export KUBECONFIG='/tmp/sigil-kube.AbC123/kubeconfig'  admin (O=system:masters), for kubectl
#   export SIGIL_KUBE_API='https://127.0.0.1:40123'        the API server
#   export SIGIL_KUBE_CA='/tmp/sigil-kube.AbC123/pki/ca.crt'
#                          the cluster CA: it signed the serving cert and the admin client cert
#   export SIGIL_KUBE_ADMIN_CERT='/tmp/sigil-kube.AbC123/pki/admin.crt'
#   export SIGIL_KUBE_ADMIN_KEY='/tmp/sigil-kube.AbC123/pki/admin.key'
#   export SIGIL_KUBE_SA_ISSUER='https://kubernetes.default.svc'
#                          `iss` of service-account tokens, and their default audience
#   export SIGIL_KUBE_SA_PUB='/tmp/sigil-kube.AbC123/pki/sa.pub'
#                          the RSA public key that verifies them (RS256)
#   export SIGIL_KUBE_ETCD='http://127.0.0.1:40125'
#   export SIGIL_KUBE_PIDS='1234 1240'                     etcd, kube-apiserver
# The serving certificate covers 127.0.0.1, localhost and kubernetes{,.default{,.svc{,.cluster.local}}}.
# Each process runs in its own session (setsid: PID = process group), so stopping by hand is
# `kill -- -PID` for each of SIGIL_KUBE_PIDS (then rm -rf "$SIGIL_KUBE_DIR"); --down does that.
# Logs: $SIGIL_KUBE_DIR/etcd.log and $SIGIL_KUBE_DIR/kube-apiserver.log.
#
# The cluster is an API server and nothing else: no controller-manager (no `default`
# ServiceAccount in new namespaces, no garbage collection, no token Secrets), no scheduler, no
# kubelet (Pods stay Pending). Pods must set `automountServiceAccountToken: false` (1.20's admission otherwise wants
# a token Secret). RBAC is on; TokenRequest/TokenReview, Secrets, ConfigMaps, watches and CRDs
# work. Ready in ~5 s; resident ~330 MB (API server) + ~48 MB (etcd).
#
# Environment: SIGIL_KUBE_CACHE (as ci/kube-setup.sh, for bin/kube-apiserver), or
# SIGIL_KUBE_APISERVER (a kube-apiserver binary); TMPDIR (where the directory is created).
# Needs etcd, openssl, curl, python3 (free ports: etcd and kube-apiserver refuse port 0).
set -euo pipefail

log() { echo "kube-up: $*" >&2; }

# Stops the processes whose PIDs are in DIR/pids, if they are still the ones started for DIR.
down() {
  local dir="$1" pid live
  [ -d "$dir" ] || return 0
  if [ -f "$dir/pids" ]; then
    live=()
    for pid in $(cat "$dir/pids"); do
      # Only a process whose command line names this directory (guards against PID reuse).
      if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$dir/"; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        live+=("$pid")
      fi
    done
    for _ in $(seq 100); do
      local any=0
      for pid in "${live[@]}"; do
        if kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
          any=1
        fi
      done
      [ "$any" = 0 ] && break
      sleep 0.1
    done
    for pid in "${live[@]}"; do
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    # Started by a script that has exited, they are init's children: init reaps them, within a
    # second or two here; wait for that (up to 5 s) so that no entry is left when this returns.
    for _ in $(seq 50); do
      local any=0
      for pid in "${live[@]}"; do [ -d "/proc/$pid" ] && any=1; done
      [ "$any" = 0 ] && break
      sleep 0.1
    done
  fi
  rm -rf "$dir"
}

if [ "${1:-}" = --down ]; then
  [ $# -eq 2 ] || { echo "usage: $0 --down DIR" >&2; exit 2; }
  down "$2"
  exit 0
fi
[ $# -eq 0 ] || { echo "usage: $0 | $0 --down DIR" >&2; exit 2; }

apiserver="${SIGIL_KUBE_APISERVER:-${SIGIL_KUBE_CACHE:-$HOME/.cache/sigil/kube}/bin/kube-apiserver}"
[ -x "$apiserver" ] || { log "no $apiserver: run ci/kube-setup.sh first"; exit 1; }
for tool in etcd openssl curl python3 setsid; do
  command -v "$tool" >/dev/null || { log "$tool not found: run ci/kube-setup.sh first"; exit 1; }
done

dir="$(mktemp -d "${TMPDIR:-/tmp}/sigil-kube.XXXXXX")"
: >"$dir/pids"
started=0
# On any failure: the logs' tails, then everything stopped and removed.
on_exit() {
  local rc=$?
  if [ "$started" = 0 ]; then
    for f in "$dir"/etcd.log "$dir"/kube-apiserver.log; do
      [ -s "$f" ] && { log "--- tail of $f"; tail -15 "$f" >&2; }
    done
    down "$dir"
  fi
  return "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# N free TCP ports on 127.0.0.1, all bound at the same time so that they differ.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# --- PKI: P-256 certificates, an RSA service-account key (RS256 tokens) ---
pki="$dir/pki"
mkdir -p "$pki"
(
  cd "$pki"
  ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
  ec ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=sigil-test-kube-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt 2>/dev/null
  sign() { # name subject extensions
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 2 \
      -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
  }
  ec apiserver.key
  sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  ec admin.key
  sign admin "/O=system:masters/CN=sigil-test-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
  openssl pkey -in sa.key -pubout -out sa.pub
  chmod 600 ./*.key
)

# Starts "$@" in its own session, output to DIR/NAME.log; its PID in $spawned (setsid does not
# fork here: a background job of a script is not a process-group leader, so $! is the process).
spawn() {
  local name="$1"
  shift
  setsid "$@" </dev/null >"$dir/$name.log" 2>&1 &
  spawned=$!
  echo "$spawned" >>"$dir/pids"
}

# Waits until CHECK succeeds (up to SECONDS s), failing early if PID has exited.
wait_for() { # pid seconds what check...
  local pid="$1" secs="$2" what="$3"
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { log "$what exited"; return 1; }
    [ $SECONDS -lt $deadline ] || { log "$what not ready after ${secs}s"; return 1; }
    sleep 0.2
  done
}

# --- etcd (plain HTTP on loopback only; a few tries in case a picked port is taken meanwhile) ---
for attempt in 1 2 3; do
  read -r etcd_port peer_port < <(free_ports 2)
  etcd_url="http://127.0.0.1:$etcd_port"
  rm -rf "$dir/etcd"
  spawn etcd etcd --name sigil-test --data-dir "$dir/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "sigil-test=http://127.0.0.1:$peer_port" \
    --initial-cluster-state new --logger zap --log-outputs stderr
  etcd_pid=$spawned
  if wait_for "$etcd_pid" 30 etcd curl -fsS "$etcd_url/health"; then break; fi
  grep -q 'address already in use' "$dir/etcd.log" && [ $attempt -lt 3 ] || exit 1
  log "etcd: port taken, retrying"
done

# --- kube-apiserver ---
issuer=https://kubernetes.default.svc
for attempt in 1 2 3; do
  read -r api_port < <(free_ports 1)
  api_url="https://127.0.0.1:$api_port"
  spawn kube-apiserver "$apiserver" \
    --etcd-servers "$etcd_url" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --secure-port "$api_port" --insecure-port 0 \
    --cert-dir "$dir/apiserver-certs" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer "$issuer" \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --authorization-mode RBAC \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none \
    --profiling=false
  api_pid=$spawned
  if wait_for "$api_pid" 90 kube-apiserver \
    curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$api_url/readyz"; then
    break
  fi
  grep -q 'address already in use' "$dir/kube-apiserver.log" && [ $attempt -lt 3 ] || exit 1
  log "kube-apiserver: port taken, retrying"
done

cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sigil-test
  cluster:
    server: $api_url
    certificate-authority: $pki/ca.crt
users:
- name: sigil-test-admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: sigil-test
  context:
    cluster: sigil-test
    user: sigil-test-admin
current-context: sigil-test
EOF
chmod 600 "$dir/kubeconfig"

# The PIDs file holds the live ones only (failed attempts were reaped above).
pids="$etcd_pid $api_pid"
echo "$pids" >"$dir/pids"
started=1
log "kube-apiserver $api_url ready (etcd $etcd_url); stop with: ci/kube-up.sh --down $dir"
# Single-quoted values (a ' inside becomes '\'').
q() { local sq="'" esc="'\\''"; printf "'%s'" "${1//$sq/$esc}"; }
cat <<EOF
export SIGIL_KUBE_DIR=$(q "$dir")
export KUBECONFIG=$(q "$dir/kubeconfig")
export SIGIL_KUBE_API=$(q "$api_url")
export SIGIL_KUBE_CA=$(q "$pki/ca.crt")
export SIGIL_KUBE_ADMIN_CERT=$(q "$pki/admin.crt")
export SIGIL_KUBE_ADMIN_KEY=$(q "$pki/admin.key")
export SIGIL_KUBE_SA_ISSUER=$(q "$issuer")
export SIGIL_KUBE_SA_PUB=$(q "$pki/sa.pub")
export SIGIL_KUBE_ETCD=$(q "$etcd_url")
export SIGIL_KUBE_PIDS=$(q "$pids")
EOF
