#!/usr/bin/env python3
"""Write a tiny SPEC §3-shaped bundle (chart + one image, OCI layout and
docker archive in images.tar, bundle.json) as a seed for the bundle_reader
fuzz target: bundle_reader/small.bundle.tar. Deterministic."""
import hashlib, io, json, os, tarfile

def add(tar, name, data):
    ti = tarfile.TarInfo(name)
    ti.size = len(data); ti.mtime = 0; ti.mode = 0o644; ti.uid = ti.gid = 0
    tar.addfile(ti, io.BytesIO(data))

def sha(b):
    return hashlib.sha256(b).hexdigest()

layer_tar = io.BytesIO()
with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.USTAR_FORMAT) as t:
    add(t, "hello.txt", b"hello from the seed\n")
layer = layer_tar.getvalue()
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(layer)]}},
                    separators=(",", ":")).encode()
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + sha(layer), "size": len(layer)}],
}, separators=(",", ":")).encode()
ref = "docker.io/library/seed:1.0"
index = json.dumps({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + sha(manifest), "size": len(manifest),
    "annotations": {"org.opencontainers.image.ref.name": ref, "io.containerd.image.name": ref}}]},
    separators=(",", ":")).encode()
docker_manifest = json.dumps([{"Config": "blobs/sha256/" + sha(config), "RepoTags": [ref],
                               "Layers": ["blobs/sha256/" + sha(layer)]}]).encode()
images = io.BytesIO()
with tarfile.open(fileobj=images, mode="w", format=tarfile.USTAR_FORMAT) as t:
    add(t, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add(t, "index.json", index)
    add(t, "manifest.json", docker_manifest)
    for b in sorted([config, layer, manifest], key=sha):
        add(t, "blobs/sha256/" + sha(b), b)
images = images.getvalue()
hints = b'- "{{ .image.registry }}/{{ .image.repository }}:{{ .image.tag }}"\n'
chart = b"apiVersion: v2\nname: seed\nversion: 1.0.0\n"
values = b"image:\n  registry: docker.io\n  repository: library/seed\n  tag: \"1.0\"\n"
files = {"hints.yaml": hints, "original-chart/Chart.yaml": chart, "original-chart/values.yaml": values}
bundle_json = json.dumps({
    "formatVersion": 1, "tool": "seed", "chart": {"name": "seed", "version": "1.0.0"},
    "images": [{"reference": ref, "digest": "sha256:" + sha(manifest), "platform": "linux/amd64"}],
    "files": {k: "sha256:" + sha(v) for k, v in files.items()},
}, indent=2).encode()
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundle_reader", "small.bundle.tar")
with open(out, "wb") as f:
    with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as t:
        add(t, "bundle.json", bundle_json)
        for k, v in files.items():
            add(t, k, v)
        add(t, "images.tar", images)
print(out, os.path.getsize(out))
