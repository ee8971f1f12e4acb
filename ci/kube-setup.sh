#!/usr/bin/env bash
# Builds a real kube-apiserver (v1.20.2) for the Kubernetes tests, and installs etcd.
#
# No registry this machine reaches ships a kube-apiserver binary, so it is built from Debian
# bookworm's source package `kubernetes` (1.20.5+really1.20.2, the last one carrying the whole
# upstream tree with vendor/) with Debian's golang-go (1.19). etcd is Debian's etcd-server (3.4).
# The project's shared notes on Kubernetes (notes/kubernetes.md) have the measurements behind each step.
#
#   ci/kube-setup.sh            build if needed; prints, last:
#                               kube-setup: kube-apiserver <version> etcd <version> at <dir>
#
# Everything lives outside the repository, in SIGIL_KUBE_CACHE (default ~/.cache/sigil/kube):
#   $CACHE/bin/kube-apiserver   the binary (what ci/kube-up.sh runs)
#   $CACHE/src/                 `apt-get source kubernetes` (34 MB download; ~410 MB with the
#                               generated code)
#   $CACHE/gopath/              the GOPATH (src/k8s.io/kubernetes -> the source tree)
# Idempotent: once the binary is there, reports v1.20.2 and was built by this recipe (the
# `recipe` stamp below), this only checks and prints. The Go build cache is deleted after a
# successful build; the source tree is kept, so a rebuild skips the download and gen_openapi.
#
# Time measured here (2 cores, a Rust build running alongside, load average 4-5): first run on
# the machine 3 min 35 s (apt installs, the source, gen_openapi, go build); again from an empty
# cache 5 min 10 s and 5 min 34 s; with the binary there 0.2 s. Cache afterwards: ~515 MB, 106 MB
# of it the binary.
set -euo pipefail

cache="${SIGIL_KUBE_CACHE:-$HOME/.cache/sigil/kube}"
want=v1.20.2
bin="$cache/bin/kube-apiserver"
# Bumped when the build recipe below changes, so that an older binary is rebuilt.
recipe=2

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  echo "kube-setup: apt-get install $*" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

etcd_version() { etcd --version 2>/dev/null | awk '/^etcd Version:/ { print "v" $3 }'; }
apiserver_version() { "$bin" --version 2>/dev/null | awk '{ print $2 }'; }

done_line() {
  echo "kube-setup: kube-apiserver $(apiserver_version) etcd $(etcd_version) at $cache"
}

# etcd and openssl are needed to run a cluster, built or not. etcd-server's maintainer script
# does not start a daemon here (no systemd; policy-rc.d); kube-up.sh starts its own.
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v openssl >/dev/null || need+=(openssl)
command -v jq >/dev/null || need+=(jq)
if [ -x "$bin" ] && [ "$(apiserver_version)" = "$want" ] &&
  [ "$(cat "$bin.recipe" 2>/dev/null)" = "$recipe" ]; then
  if [ ${#need[@]} -gt 0 ]; then
    as_root apt-get update -qq
    apt_install "${need[@]}"
  fi
  done_line
  exit 0
fi

start=$SECONDS

# 1. The deb-src entry: the same archive and key as the image's first binary stanza.
src_list=/etc/apt/sources.list.d/sigil-kube-src.sources
uris=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources | head -1)
signed=$(sed -n 's/^Signed-By:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources | head -1)
entry=$(printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: %s\n' \
  "${uris:-http://deb.debian.org/debian}" "${signed:-/usr/share/keyrings/debian-archive-keyring.gpg}")
if [ "$(cat "$src_list" 2>/dev/null)" != "$entry" ]; then
  printf '%s\n' "$entry" | as_root tee "$src_list" >/dev/null
fi
as_root apt-get update -qq
# 2. The toolchain (golang-go is 1.19 in bookworm) and Debian's reflect2 1.0.2.
need+=(golang-go golang-github-modern-go-reflect2-dev dpkg-dev make rsync)
apt_install "${need[@]}"

# 3. The source package, once.
mkdir -p "$cache/src" "$cache/bin"
tree=$(find "$cache/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
if [ -z "$tree" ] || [ ! -f "$tree/cmd/kube-apiserver/apiserver.go" ]; then
  rm -rf "$cache/src"
  mkdir -p "$cache/src"
  echo "kube-setup: apt-get source kubernetes" >&2
  # (As root, apt-get source warns that it cannot drop privileges to _apt: harmless.)
  (cd "$cache/src" && apt-get source kubernetes >"$cache/apt-source.log" 2>&1) || {
    tail -20 "$cache/apt-source.log" >&2
    exit 1
  }
  tree=$(find "$cache/src" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
fi

# 4. The vendored reflect2 1.0.1 breaks json-iterator at run time on Go >= 1.18: Debian's 1.0.2.
reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
rsync -a --delete --exclude=.git "$reflect2"/ "$tree/vendor/github.com/modern-go/reflect2/"

# 5. GOPATH mode (module mode wants to update go.mod, refused under -mod=vendor).
gopath="$cache/gopath"
mkdir -p "$gopath/src/k8s.io"
ln -sfn "$tree" "$gopath/src/k8s.io/kubernetes"
export GOPATH="$gopath" GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0 GOCACHE="$cache/gocache"
pkg="$gopath/src/k8s.io/kubernetes"

# 6. The generated OpenAPI definitions first (else: undefined: openapi.GetOpenAPIDefinitions).
if [ ! -s "$tree/pkg/generated/openapi/zz_generated.openapi.go" ]; then
  echo "kube-setup: make gen_openapi" >&2
  (cd "$pkg" && make gen_openapi >"$cache/gen_openapi.log" 2>&1) || {
    tail -30 "$cache/gen_openapi.log" >&2
    exit 1
  }
fi

echo "kube-setup: go build ./cmd/kube-apiserver ($(go version | awk '{ print $3 }'))" >&2
# The version goes into both copies, as upstream's hack/lib/version.sh does: component-base's
# (`--version`, the log) and client-go's, which the aggregator serves at /version (without it,
# /version says Debian's placeholder v0.0.0-master+faecb196815e2).
ldflags="-s -w"
for v in k8s.io/kubernetes/vendor/k8s.io/{component-base/version,client-go/pkg/version}; do
  ldflags+=" -X $v.gitVersion=$want -X $v.gitMajor=1 -X $v.gitMinor=20 -X $v.gitTreeState=clean"
  ldflags+=" -X $v.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done
(cd "$pkg" && go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" ./cmd/kube-apiserver)
mv "$bin.tmp" "$bin"
echo "$recipe" >"$bin.recipe"
got=$(apiserver_version)
if [ "$got" != "$want" ]; then
  echo "kube-setup: built kube-apiserver reports '$got', not $want" >&2
  exit 1
fi
rm -rf "$GOCACHE"
echo "kube-setup: built in $((SECONDS - start)) s" >&2
done_line
