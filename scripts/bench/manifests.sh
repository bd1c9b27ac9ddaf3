#!/usr/bin/env bash
# Per tree of ../shared/fixtures/manifests: images found, places relocated,
# pack seconds; then one sync of all of them to a LOCAL target (issue 24).
# Runnable by anyone; NOT part of the test suite. Stand-in images (one tiny
# shared image under every name the manifests use) replace the real ones,
# so the figures measure finding and relocating, not downloading.
#
#   scripts/bench/manifests.sh            # BUNDLER_BIN=path to pick a binary
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BUNDLER_BIN:-$here/target/release/bundler}
[ -x "$BIN" ] || BIN=$here/target/debug/bundler
K=$here/../shared/fixtures/manifests/cube-studio/install/kubernetes
MS=$here/../shared/fixtures/manifests/metrics-server/manifests
work=$(mktemp -d); trap 'kill $reg_pid 2>/dev/null || true; rm -rf "$work"' EXIT
reg_pid=
entries="
dashboard|v2.2.0|$K/dashboard/v2.2.0-cluster.yaml|
dashboard-user|v2.2.0|$K/dashboard/v2.2.0-user.yaml|
kube-batch|v0.5|$K/kube-batch/deploy.yaml|
kube-batch-demo|v0.5|$K/kube-batch/demo.yaml|
volcano|v1.4.0|$K/volcano/volcano-development.yaml|
volcano-demo|v1.4.0|$K/volcano/demo.yaml|
cube|2022.09.01|$K/cube|overlays
training-operator|1.3.0|$K/kubeflow/train-operator/manifests|overlays/standalone
training-operator-kubeflow|1.3.0|$K/kubeflow/train-operator/manifests|overlays/kubeflow
kfp-cluster|1.6.0|$K/kubeflow/pipeline/1.6.0/kustomize|cluster-scoped-resources
kfp|1.6.0|$K/kubeflow/pipeline/1.6.0/kustomize|env/platform-agnostic
metrics-server|v0.9.0|$MS|overlays/release
metrics-server-test|v0.9.0|$MS|overlays/test
"
manifest() { # $1: archive line or empty
  printf 'apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {name: bench, version: "1"}\nspec:\n  manifests:\n'
  while IFS='|' read -r n v p k; do
    [ -n "$n" ] || continue
    printf '    - {name: %s, version: "%s", path: %s%s%s}\n' "$n" "$v" "$p" "${k:+, kustomize: $k}" "$1"
  done <<<"$entries"
}
manifest "" >"$work/list.yaml"
"$BIN" pack "$work/list.yaml" --print-images --json >"$work/list.json"
python3 - "$work/list.json" "$work/standins.oci" <<'PY'
import hashlib, json, os, sys, io, tarfile, gzip
refs = sorted({i["reference"] for m in json.load(open(sys.argv[1]))["manifests"] for i in m["images"]})
out = sys.argv[2]; os.makedirs(out + "/blobs/sha256")
def put(b):
    d = hashlib.sha256(b).hexdigest(); open(f"{out}/blobs/sha256/{d}", "wb").write(b); return "sha256:" + d, len(b)
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w") as t:
    ti = tarfile.TarInfo("standin"); data = b"stand-in\n"; ti.size = len(data); t.addfile(ti, io.BytesIO(data))
layer = gzip.compress(raw.getvalue(), mtime=0)
ld, ls = put(layer)
cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]}}).encode()
cd, cs = put(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}]}).encode()
md, ms = put(man)
open(out + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
           "annotations": {"org.opencontainers.image.ref.name": r}} for r in refs if "@" not in r]}, open(out + "/index.json", "w"))
PY
manifest ", images: [{archive: $work/standins.oci}]" | grep -v ingress >"$work/bench.yaml"
start=$(date +%s.%N)
"$BIN" pack "$work/bench.yaml" -o "$work/out" --json >"$work/pack.json" 2>/dev/null
end=$(date +%s.%N)
python3 - "$work/pack.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{'tree':28} {'images':>6} {'places':>6} {'relocated':>9} {'seconds':>8}")
for m in s["manifests"]:
    print(f"{m['name']:28} {m['images']:>6} {m['places']:>6} {m['relocated']:>9} {m['seconds']:>8.2f}")
PY
echo "pack total: $(python3 -c "print(round($end-$start,2))") s (bundler: $BIN, kubectl: $(kubectl version --client | head -1))"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/reg"
printf 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' "$work/reg" "$port" >"$work/reg.yml"
docker-registry serve "$work/reg.yml" 2>/dev/null & reg_pid=$!
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
printf 'source: {intermediateBundlesPath: %s}\ntarget:\n  containerPrefixRegistry: 127.0.0.1:%s\n  repo: {kind: LOCAL, path: %s}\n' "$work/out" "$port" "$work/site" >"$work/load-image.yaml"
start=$(date +%s.%N)
"$BIN" sync --config "$work/load-image.yaml" --insecure --json >"$work/sync.json" 2>/dev/null
end=$(date +%s.%N)
python3 - "$work/sync.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"sync: {s['imagesPushed']} images pushed; relocated and proven:")
for m in s["manifests"]:
    print(f"  {m['name']:28} {m['images']:>3} images named by the relocated copy, {len(m['edits'])} edits, {m['outcome']}")
PY
echo "sync total: $(python3 -c "print(round($end-$start,2))") s"
