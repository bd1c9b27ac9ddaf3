#!/usr/bin/env bash
# The main job end to end on the example product, against a real local
# registry this script starts (CNCF distribution, basic auth, on 127.0.0.1):
#   1. bundler pack   bundle-manifests/example.yaml  -> bundles + offline package
#   2. bundler sync   --config load-image.yaml        -> images + chart into the registry
#   3. bundler upgrade demo --dry-run                 -> backup, diff, pre-flight against the registry
# Then it checks the result with skopeo and helm. Everything lands in ./work-e2e.
#
# No Kubernetes API server can run here, so step 3 talks to the cluster
# through tests/support/helm-cluster-standin (the same stand-in the tests use; it keeps a release in files and
# hands `template`/`pull`/`show` to the real helm).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh
# Not --quiet: the first build compiles every dependency (minutes on a
# small machine) and should be seen doing so.
echo "== building bundler (cargo build --locked; the first build takes a few minutes)"
cargo build --locked
BUNDLER=$ROOT/target/debug/bundler

WORK=$ROOT/work-e2e
rm -rf "$WORK"; mkdir -p "$WORK/registry/data" "$WORK/site"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
USER=admin; PASS=Harbor12345
htpasswd -Bbn "$USER" "$PASS" > "$WORK/registry/htpasswd"
cat > "$WORK/registry/config.yml" <<CFG
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/registry/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PORT, secret: demo}
auth: {htpasswd: {realm: demo, path: $WORK/registry/htpasswd}}
CFG
docker-registry serve "$WORK/registry/config.yml" 2> "$WORK/registry/log" &
REG_PID=$!
trap 'kill $REG_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
echo "== registry 127.0.0.1:$PORT (basic auth) started"

echo "== 1. pack"
"$BUNDLER" pack bundle-manifests/example.yaml --output "$WORK/out"
ls -l "$WORK/out"

echo "== 2. sync"
cd "$WORK/site"
cat > load-image.yaml <<CFG
source:
  intermediateBundlesPath: ../out/demo_1.0.0_amd64.tar   # the offline package as shipped
target:
  containerPrefixRegistry: 127.0.0.1:$PORT
  repo:
    kind: OCI
    url: oci://127.0.0.1:$PORT/charts
    auth:
      username: "$USER"
      password: "$PASS"
  containers:
    auth:
      username: "$USER"
      password: "$PASS"
CFG
"$BUNDLER" sync --config load-image.yaml --insecure
echo "== re-sync (nothing to move)"
"$BUNDLER" sync --config load-image.yaml --insecure --json | grep -E '"(imagesPushed|imagesUnchanged|blobsUploaded|bytesUploaded)"'

echo "== check with skopeo: digests survived"
want=$(skopeo inspect --raw oci:"$ROOT/examples/images/demo-worker.oci":registry.example.com/demo/worker:1.0.0 | sha256sum | cut -d' ' -f1)
got=$(skopeo inspect --raw --tls-verify=false --creds "$USER:$PASS" docker://127.0.0.1:$PORT/registry.example.com/demo/worker:1.0.0 | sha256sum | cut -d' ' -f1)
[ "$want" = "$got" ] && echo "worker digest sha256:$got kept" || { echo "digest changed: $want -> $got"; exit 1; }

echo "== check with helm: the relocated chart renders only private-registry images"
export HELM_REGISTRY_CONFIG=$WORK/helm-registry.json
echo "$PASS" | helm registry login --insecure --plain-http -u "$USER" --password-stdin 127.0.0.1:$PORT >/dev/null 2>&1 \
  || echo "$PASS" | helm registry login --insecure -u "$USER" --password-stdin 127.0.0.1:$PORT >/dev/null
mkdir -p "$WORK/pulled"
helm pull oci://127.0.0.1:$PORT/charts/demo --version 1.0.0 --plain-http -d "$WORK/pulled"
helm template demo "$WORK/pulled/demo-1.0.0.tgz" | grep 'image:' | sort -u
if helm template demo "$WORK/pulled/demo-1.0.0.tgz" | grep 'image:' | grep -v "127.0.0.1:$PORT/"; then
  echo "an image still points outside the private registry"; exit 1
fi

echo "== 3. upgrade --dry-run (cluster side: stand-in with an installed release demo 0.9.0)"
export FAKE_HELM_STATE=$WORK/cluster FAKE_HELM_REAL=$(command -v helm)
rel=$FAKE_HELM_STATE/releases/demo-system/demo
mkdir -p "$rel"
echo 1 > "$rel/current"; echo deployed > "$rel/status-1"; echo demo-0.9.0 > "$rel/chart-1"; echo 0.9.0 > "$rel/app-1"
printf 'web:\n  replicas: 2\n' > "$rel/values-1.yaml"
BUNDLER_HELM="$ROOT/tests/support/helm-cluster-standin" "$BUNDLER" upgrade demo --dry-run --insecure --backup-dir "$WORK/backups"
echo "== done: pack -> sync -> upgrade --dry-run all passed (work files in $WORK)"
