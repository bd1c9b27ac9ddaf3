#!/usr/bin/env bash
# Measure which tools read a bundle's images.tar, and whether they keep the
# image's name and digest (the README's runtime table, issue 22).
#
#   scripts/runtime-table.sh [BUNDLER]      (default target/debug/bundler)
#
# Four images go into a local docker-registry: OCI- and docker-typed, each
# as a single manifest and as a two-platform index/list. They are packed
# twice (--platform linux/amd64 and --platform all), and each images.tar is
# handed to: ctr image import, docker load, podman load, podman pull
# oci-archive:, skopeo inspect oci-archive: and docker-archive:, umoci stat.
# A cell says: name kept? digest kept (the digest bundle.json records)?
# Needs root (containerd, dockerd), docker-registry, skopeo, podman, umoci.
# Everything runs under a temp dir on 127.0.0.1 and is removed at the end.
set -u
BUNDLER=${1:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/bundler}
W=$(mktemp -d /tmp/rtt.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.2; done; return 1; }

# --- registry with the four images -----------------------------------------
PORT=$(free_port); REG=127.0.0.1:$PORT
mkdir -p "$W/reg"
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: "%s", secret: s}\n' "$W/reg" "$REG" > "$W/reg.yml"
docker-registry serve "$W/reg.yml" >/dev/null 2>&1 & PIDS+=($!)
sleep 1
SRC=$(cd "$(dirname "$0")/.." && pwd)/examples/images/demo-web.oci.tar   # a two-platform OCI index
S="skopeo copy --quiet --dest-tls-verify=false"
$S --format v2s2 "oci-archive:$SRC:registry.example.com/demo/web:1.0.0" "docker://$REG/rt/docker-single:1"
$S "oci-archive:$SRC:registry.example.com/demo/web:1.0.0" "docker://$REG/rt/oci-single:1"
$S --all --format v2s2 "oci-archive:$SRC:registry.example.com/demo/web:1.0.0" "docker://$REG/rt/docker-multi:1"
$S --all "oci-archive:$SRC:registry.example.com/demo/web:1.0.0" "docker://$REG/rt/oci-multi:1"
IMAGES="oci-single docker-single oci-multi docker-multi"
printf 'apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {name: rt, version: 1.0.0}\nspec:\n  images:\n' > "$W/m.yaml"
for i in $IMAGES; do echo "    - $REG/rt/$i:1" >> "$W/m.yaml"; done
for mode in single all; do
  plat=linux/amd64; [ $mode = all ] && plat=all
  "$BUNDLER" pack "$W/m.yaml" -o "$W/$mode" --platform $plat --insecure >/dev/null 2>&1 || { echo "pack failed"; exit 1; }
  tar xOf "$W/$mode/rt-images_1.0.0.bundle.tar" images.tar > "$W/$mode.tar"
  mkdir -p "$W/$mode.layout" && tar xf "$W/$mode.tar" -C "$W/$mode.layout"
  # The digest each image has in the bundle (what index.json names it by).
  python3 - "$W/$mode.layout/index.json" > "$W/$mode.digests" <<'PY'
import json,sys
for m in json.load(open(sys.argv[1]))["manifests"]:
    print(m["annotations"]["org.opencontainers.image.ref.name"], m["digest"])
PY
done
want() { awk -v r="$REG/rt/$2:1" '$1==r{print $2}' "$W/$1.digests"; }

# --- daemons -----------------------------------------------------------------
C=$W/ctrd; mkdir -p "$C"
printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s/c.sock"\n[ttrpc]\n  address = "%s/c.sock.ttrpc"\n' "$C" "$C" "$C" "$C" > "$C/config.toml"
containerd --config "$C/config.toml" >/dev/null 2>&1 & PIDS+=($!)
D=$W/dkd; mkdir -p "$D"; echo '{}' > "$D/daemon.json"
dockerd --iptables=false --bridge=none --storage-driver=vfs --config-file "$D/daemon.json" --data-root "$D/data" --exec-root "$D/exec" --host "unix://$D/d.sock" --pidfile "$D/pid" >/dev/null 2>&1 & PIDS+=($!)
wait_sock "$C/c.sock" || echo "containerd did not start"
wait_sock "$D/d.sock" || echo "dockerd did not start"
CTR="ctr --address $C/c.sock -n rtt"
DOCKER="docker -H unix://$D/d.sock"

cell() { # name-kept digest-kept|other
  case "$1" in
    ok) echo "name ✓, digest ✓";;
    newdigest) echo "name ✓, digest ✗ ($2)";;
    *) echo "✗ $1";;
  esac
}

declare -A R
for mode in single all; do
  T=$W/$mode.tar
  # ctr
  $CTR images rm $($CTR images ls -q 2>/dev/null) >/dev/null 2>&1
  flag=""; [ $mode = all ] && flag=--all-platforms
  out=$($CTR image import $flag "$T" 2>&1); rc=$?
  for i in $IMAGES; do
    if [ $rc -ne 0 ]; then R[ctr,$mode,$i]="✗ ${out##*: }"; continue; fi
    got=$($CTR images ls 2>/dev/null | awk -v r="$REG/rt/$i:1" '$1==r{print $3}')
    if [ -z "$got" ]; then R[ctr,$mode,$i]="✗ not imported"
    elif [ "$got" = "$(want $mode $i)" ]; then R[ctr,$mode,$i]="name ✓, digest ✓"
    else R[ctr,$mode,$i]="name ✓, digest ✗"; fi
  done
  # docker load: the classic store keeps no registry digest for loaded images.
  $DOCKER rmi -f $($DOCKER images -q) >/dev/null 2>&1
  out=$($DOCKER load -i "$T" 2>&1); rc=$?
  for i in $IMAGES; do
    if [ $rc -ne 0 ]; then R[docker,$mode,$i]="✗ ${out##*: }"; continue; fi
    if $DOCKER image inspect "$REG/rt/$i:1" >/dev/null 2>&1; then
      rd=$($DOCKER image inspect --format '{{join .RepoDigests ","}}' "$REG/rt/$i:1")
      case "$rd" in *"$(want $mode $i)"*) R[docker,$mode,$i]="name ✓, digest ✓";; *) R[docker,$mode,$i]="name ✓, digest ✗ (none kept)";; esac
    else R[docker,$mode,$i]="✗ not loaded"; fi
  done
  # podman load (reads manifest.json: docker-archive)
  P="podman --root $W/p-$mode/root --runroot $W/p-$mode/run --storage-driver vfs"
  out=$($P load -i "$T" 2>&1); rc=$?
  for i in $IMAGES; do
    if [ $rc -ne 0 ]; then R[podman-load,$mode,$i]="✗ ${out##*: }"; continue; fi
    got=$($P images --digests --format '{{.Repository}}:{{.Tag}} {{.Digest}}' | awk -v r="$REG/rt/$i:1" '$1==r{print $2}')
    if [ -z "$got" ]; then R[podman-load,$mode,$i]="✗ not loaded"
    elif [ "$got" = "$(want $mode $i)" ]; then R[podman-load,$mode,$i]="name ✓, digest ✓"
    else R[podman-load,$mode,$i]="name ✓, digest ✗"; fi
  done
  # podman pull oci-archive:FILE:REF
  for i in $IMAGES; do
    P="podman --root $W/pp-$mode-$i/root --runroot $W/pp-$mode-$i/run --storage-driver vfs"
    out=$($P pull "oci-archive:$T:$REG/rt/$i:1" 2>&1); rc=$?
    if [ $rc -ne 0 ]; then R[podman-pull,$mode,$i]="✗ ${out##*Error: }"; continue; fi
    got=$($P images --digests --format '{{.Repository}}:{{.Tag}} {{.Digest}}' | awk -v r="$REG/rt/$i:1" '$1==r{print $2}')
    if [ "$got" = "$(want $mode $i)" ]; then R[podman-pull,$mode,$i]="name ✓, digest ✓"
    else R[podman-pull,$mode,$i]="name ✓, digest ✗ ($got)"; fi
  done
  # skopeo: the manifest it reads, hashed, against the bundle's digest
  for tr in oci-archive docker-archive; do
    for i in $IMAGES; do
      out=$(skopeo inspect --raw "$tr:$T:$REG/rt/$i:1" 2>&1); rc=$?
      if [ $rc -ne 0 ]; then e=${out##*: }; R[$tr,$mode,$i]="✗ ${e%\"}"; continue; fi
      got=sha256:$(printf '%s' "$out" | sha256sum | cut -d' ' -f1)
      if [ "$got" = "$(want $mode $i)" ]; then R[$tr,$mode,$i]="digest ✓"
      else R[$tr,$mode,$i]="digest ✗ (manifest rebuilt)"; fi
    done
  done
  # umoci (reads an OCI layout dir)
  for i in $IMAGES; do
    out=$(umoci stat --image "$W/$mode.layout:$REG/rt/$i:1" 2>&1); rc=$?
    if [ $rc -eq 0 ]; then R[umoci,$mode,$i]="✓ (stat)"; else e=$(echo "$out" | head -1); R[umoci,$mode,$i]="✗ ${e##*⨯ }"; fi
  done
done

printf '| tool | bundle | %s |\n|---|---|---|---|---|---|\n' "$(echo $IMAGES | sed 's/ / | /g')"
for t in ctr docker podman-load podman-pull oci-archive docker-archive umoci; do
  for mode in single all; do
    row="| $t | $mode |"
    for i in $IMAGES; do row="$row ${R[$t,$mode,$i]} |"; done
    echo "$row"
  done
done
