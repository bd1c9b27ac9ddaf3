#!/usr/bin/env python3
"""Write the small example images under examples/images/ (deterministic).

No registry or docker daemon is reachable where bundler is developed, so the
example product's images are made here from scratch: real gzip'd layer tars,
configs and manifests.

- demo-web.oci.tar: an OCI image layout (tar) with a two-platform index
  (linux/amd64, linux/arm64) sharing one base layer, named
  registry.example.com/demo/web:1.0.0
- demo-worker.oci/: an OCI image layout directory, registry.example.com/demo/worker:1.0.0
- demo-sidecar.docker.tar: a legacy `docker save` archive (layer.tar dirs,
  <id>.json config, manifest.json, repositories), docker.io/library/demo-sidecar:1.0
"""
import gzip, hashlib, io, json, os, shutil, sys, tarfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "images")


def sha(b):
    return hashlib.sha256(b).hexdigest()


def layer_tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            ti.mode = 0o755 if name.endswith(".sh") else 0o644
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def gz(b):
    return gzip.compress(b, compresslevel=9, mtime=0)


def desc(mt, b, **extra):
    d = {"mediaType": mt, "digest": "sha256:" + sha(b), "size": len(b)}
    d.update(extra)
    return d


def dumps(o):
    return json.dumps(o, separators=(",", ":"), sort_keys=False).encode()


def image(arch, layers_raw, cmd):
    layers = [gz(l) for l in layers_raw]
    config = dumps({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l) for l in layers_raw]},
    })
    manifest = dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", l) for l in layers],
    })
    return manifest, [config] + layers


def write_layout(root, entries, blobs):
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(os.path.join(root, "blobs", "sha256"))
    with open(os.path.join(root, "oci-layout"), "wb") as f:
        f.write(b'{"imageLayoutVersion":"1.0.0"}')
    for b in blobs:
        with open(os.path.join(root, "blobs", "sha256", sha(b)), "wb") as f:
            f.write(b)
    with open(os.path.join(root, "index.json"), "wb") as f:
        f.write(dumps({"schemaVersion": 2, "manifests": entries}))


def tar_dir(src, dst):
    with tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as t:
        for dirpath, dirs, files in sorted(os.walk(src)):
            dirs.sort()
            for name in sorted(files):
                p = os.path.join(dirpath, name)
                ti = t.gettarinfo(p, os.path.relpath(p, src))
                ti.mtime = 0; ti.uid = ti.gid = 0; ti.uname = ti.gname = ""; ti.mode = 0o644
                with open(p, "rb") as f:
                    t.addfile(ti, f)


def main():
    os.makedirs(OUT, exist_ok=True)
    base = layer_tar([("etc/demo-release", b"demo base layer 1.0\n" * 64)])
    # web: two platforms sharing the base layer
    mans, blobs = [], []
    for arch in ("amd64", "arm64"):
        m, bs = image(arch, [base, layer_tar([("usr/local/bin/web.sh", ("#!/bin/sh\necho web on %s\n" % arch).encode())])], ["/usr/local/bin/web.sh"])
        mans.append((arch, m)); blobs += bs + [m]
    index = dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": [desc("application/vnd.oci.image.manifest.v1+json", m, platform={"architecture": a, "os": "linux"}) for a, m in mans]})
    tmp = os.path.join(OUT, ".web-layout")
    write_layout(tmp, [desc("application/vnd.oci.image.index.v1+json", index, annotations={"org.opencontainers.image.ref.name": "registry.example.com/demo/web:1.0.0"})], blobs + [index])
    tar_dir(tmp, os.path.join(OUT, "demo-web.oci.tar"))
    shutil.rmtree(tmp)
    # worker: one platform, layout directory
    m, bs = image("amd64", [base, layer_tar([("usr/local/bin/worker.sh", b"#!/bin/sh\necho worker\n")])], ["/usr/local/bin/worker.sh"])
    write_layout(os.path.join(OUT, "demo-worker.oci"), [desc("application/vnd.oci.image.manifest.v1+json", m, annotations={"org.opencontainers.image.ref.name": "registry.example.com/demo/worker:1.0.0"})], bs + [m])
    # sidecar: legacy docker save archive (uncompressed layer.tar)
    raw = layer_tar([("usr/local/bin/sidecar.sh", b"#!/bin/sh\necho sidecar\n")])
    config = dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/usr/local/bin/sidecar.sh"]},
                    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(raw)]}})
    cid = sha(config)
    lid = sha(raw)
    with tarfile.open(os.path.join(OUT, "demo-sidecar.docker.tar"), "w", format=tarfile.GNU_FORMAT) as t:
        def add(name, data):
            ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = 0; ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
        add(cid + ".json", config)
        add(lid + "/VERSION", b"1.0")
        add(lid + "/layer.tar", raw)
        add("manifest.json", dumps([{"Config": cid + ".json", "RepoTags": ["demo-sidecar:1.0"], "Layers": [lid + "/layer.tar"]}]))
        add("repositories", dumps({"demo-sidecar": {"1.0": lid}}))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
