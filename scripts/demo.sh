#!/usr/bin/env bash
# The main job end to end on the example product, against a real local
# registry this script starts (CNCF distribution, basic auth, on 127.0.0.1):
#   1. bundler pack   bundle-manifests/example.yaml  -> bundles + offline package
#   2. bundler sync   --config load-image.yaml        -> images + chart into the registry
#   3. bundler upgrade demo [--dry-run]               -> backup, diff, pre-flight, the real helm upgrade, its proof
#      bundler status demo                            -> the release runs exactly the package
# Then it checks the result with skopeo and helm. Everything lands in ./work-e2e.
#
# No Kubernetes cluster can run here, so step 3 runs the real helm against
# tests/support/kube-api-standin.py, the Kubernetes API stand-in the tests
# use (release records, revisions and --wait are real helm's).
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

echo "== 3. upgrade (cluster: the Kubernetes API stand-in; release demo installed from the original chart)"
python3 "$ROOT/tests/support/kube-api-standin.py" --log "$WORK/kube-api.log" > "$WORK/kube-api.port" &
API_PID=$!
trap 'kill $REG_PID $API_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$WORK/kube-api.port" ] && break; sleep 0.1; done
cat > "$WORK/kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters: [{name: site, cluster: {server: "http://127.0.0.1:$(head -1 "$WORK/kube-api.port")"}}]
contexts: [{name: site, context: {cluster: site, user: admin}}]
current-context: site
users: [{name: admin, user: {token: demo}}]
KCFG
export KUBECONFIG=$WORK/kubeconfig
helm install demo "$ROOT/examples/charts/demo" -n demo-system --create-namespace --set web.replicas=2 --wait=watcher --timeout 60s >/dev/null
helm history demo -n demo-system
"$BUNDLER" upgrade demo --dry-run --insecure --backup-dir "$WORK/backups"
"$BUNDLER" upgrade demo --insecure --backup-dir "$WORK/backups" --timeout 60s
helm history demo -n demo-system
helm get values demo -n demo-system
echo "== what the site runs (bundler status: deployed vs carried vs in the registry, drift)"
"$BUNDLER" status demo --insecure
echo "== done: pack -> sync -> upgrade all passed (work files in $WORK)"
