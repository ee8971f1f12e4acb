#!/usr/bin/env bash
# Kubernetes mode end to end against a real API server (kube-apiserver v1.20.2 + etcd, built
# once by ci/kube-setup.sh, one throwaway cluster per test by ci/kube-up.sh): the tests in
# host/tests/kubernetes.rs (all named k8s_*), then one closing line of figures from them:
#   k8s-e2e: replicas=3 roots_created=1 identities=<n> calls_failed=0 secret_swaps=<n> failovers=<n> ca_activations=<n>
# replicas/roots_created: three Sentry replicas started at once and the roots they generated;
# identities: workload certificates issued over the run; calls_failed: signing calls and
# renewals that failed across Secret replacements and a dead replica; secret_swaps: Secrets
# replaced under load by kubectl apply; failovers: Sentry replicas killed under a renewing
# sidecar; ca_activations: automatic root rotations two replicas took in the Secret while two
# sidecars called each other (at least two). Exits non-zero if a test fails or a figure is off.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/kube-setup.sh >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --locked -p sigil-host --test kubernetes -- --nocapture k8s_ 2>&1 | tee "$log"
awk '
  /^k8s: / {
    for (i = 2; i <= NF; i++) {
      split($i, kv, "=")
      if (kv[1] == "replicas") replicas = kv[2]
      else if (kv[1] == "roots_created") roots = kv[2]
      else sum[kv[1]] += kv[2]
    }
  }
  END {
    printf "k8s-e2e: replicas=%d roots_created=%d identities=%d calls_failed=%d secret_swaps=%d failovers=%d ca_activations=%d\n",
      replicas, roots, sum["identities"], sum["calls_failed"], sum["secret_swaps"], sum["failovers"], sum["ca_activations"]
    exit !(replicas == 3 && roots == 1 && sum["calls_failed"] == 0 && sum["identities"] > 0 && sum["ca_activations"] >= 2)
  }' "$log"
