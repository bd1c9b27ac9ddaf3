#!/usr/bin/env python3
"""Benchmark data: N single-platform images, each one shared base layer plus
one unique layer, as OCI image layouts on disk (one layout per image, the
shared blob hard-linked so it is stored once).

Layers are real tar archives holding one file of seeded pseudo-random
(incompressible) bytes, gzip'd at level 0 (stored deflate blocks: a valid
tar+gzip layer that costs nothing to "compress"), so every tool moves them as
they are.

    gen_images.py OUT_DIR --images N --shared-mib S --unique-mib U [--ref-prefix P]

Writes OUT_DIR/img<i>/ (oci-layout, index.json, blobs/sha256/...) with the
index.json entry annotated org.opencontainers.image.ref.name = P/img<i>:1,
and OUT_DIR/images.json: [{"name", "layout", "ref", "manifest_digest"}...]
plus "blobs": [{"digest", "size", "path"}] (unique blobs incl. configs and
manifests) and "unique_bytes". Idempotent: a finished OUT_DIR (images.json
present with the same parameters) is kept as it is.
"""
import argparse
import hashlib
import json
import os
import random
import sys
import tarfile
import zlib

CHUNK = 4 << 20


def write_layer(blobs_dir, seed, size, name):
    """Stream a gzip(level 0) tar layer with one file of `size` random bytes.
    Returns (digest, diff_id, compressed size)."""
    rng = random.Random(seed)
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mode = 0o644
    ti.mtime = 0
    header = ti.tobuf(format=tarfile.GNU_FORMAT)
    pad = (512 - size % 512) % 512
    trailer = b"\0" * (pad + 1024)
    diff = hashlib.sha256()
    comp = hashlib.sha256()
    gz = zlib.compressobj(0, zlib.DEFLATED, 31)
    tmp = os.path.join(blobs_dir, f".tmp-{os.getpid()}-{seed}")
    total = 0
    with open(tmp, "wb") as f:

        def feed(raw):
            nonlocal total
            diff.update(raw)
            out = gz.compress(raw)
            if out:
                comp.update(out)
                f.write(out)
                total += len(out)

        feed(header)
        left = size
        while left > 0:
            n = min(CHUNK, left)
            feed(rng.randbytes(n))
            left -= n
        feed(trailer)
        out = gz.flush()
        comp.update(out)
        f.write(out)
        total += len(out)
    digest = comp.hexdigest()
    os.replace(tmp, os.path.join(blobs_dir, digest))
    return "sha256:" + digest, "sha256:" + diff.hexdigest(), total


def write_blob(blobs_dir, data):
    d = hashlib.sha256(data).hexdigest()
    p = os.path.join(blobs_dir, d)
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.write(data)
    return "sha256:" + d


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--shared-mib", type=float, default=64)
    ap.add_argument("--unique-mib", type=float, default=28)
    ap.add_argument("--ref-prefix", default="bench.example.com/bench")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    params = {
        "images": a.images,
        "shared_mib": a.shared_mib,
        "unique_mib": a.unique_mib,
        "ref_prefix": a.ref_prefix,
        "seed": a.seed,
    }
    meta_path = os.path.join(a.out, "images.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            if json.load(f).get("params") == params:
                print(f"gen_images: {a.out} is up to date", file=sys.stderr)
                return
    os.makedirs(a.out, exist_ok=True)
    pool = os.path.join(a.out, "pool")
    os.makedirs(pool, exist_ok=True)

    shared_size = int(a.shared_mib * (1 << 20))
    unique_size = int(a.unique_mib * (1 << 20))
    layers = []
    if shared_size > 0:
        shared = write_layer(pool, a.seed * 1_000_003, shared_size, "base.bin")
    else:
        shared = None
    images = []
    blobs = {}

    def note(digest):
        p = os.path.join(pool, digest.split(":", 1)[1])
        blobs[digest] = {"digest": digest, "size": os.path.getsize(p), "path": p}

    for i in range(a.images):
        layers = []
        if shared:
            layers.append(shared)
        if unique_size > 0:
            layers.append(
                write_layer(pool, a.seed * 1_000_003 + 1 + i, unique_size, f"app{i}.bin")
            )
        config = compact(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["PATH=/bin"], "Labels": {"bench.image": str(i)}},
                "rootfs": {"type": "layers", "diff_ids": [l[1] for l in layers]},
            }
        )
        config_digest = write_blob(pool, config)
        manifest = compact(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": l[0],
                        "size": l[2],
                    }
                    for l in layers
                ],
            }
        )
        manifest_digest = write_blob(pool, manifest)
        ref = f"{a.ref_prefix}/img{i}:1"
        layout = os.path.join(a.out, f"img{i}")
        bdir = os.path.join(layout, "blobs", "sha256")
        os.makedirs(bdir, exist_ok=True)
        for d in [config_digest, manifest_digest] + [l[0] for l in layers]:
            note(d)
            src = os.path.join(pool, d.split(":", 1)[1])
            dst = os.path.join(bdir, d.split(":", 1)[1])
            if not os.path.exists(dst):
                os.link(src, dst)
        with open(os.path.join(layout, "oci-layout"), "wb") as f:
            f.write(b'{"imageLayoutVersion":"1.0.0"}')
        with open(os.path.join(layout, "index.json"), "wb") as f:
            f.write(
                compact(
                    {
                        "schemaVersion": 2,
                        "manifests": [
                            {
                                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "digest": manifest_digest,
                                "size": len(manifest),
                                "annotations": {
                                    "org.opencontainers.image.ref.name": ref
                                },
                            }
                        ],
                    }
                )
            )
        images.append(
            {
                "name": f"img{i}",
                "layout": layout,
                "ref": ref,
                "repo_tag": f"bench/img{i}:1",
                "manifest_digest": manifest_digest,
            }
        )
        print(f"gen_images: img{i} {manifest_digest[:19]}", file=sys.stderr)

    unique = sorted(blobs.values(), key=lambda b: b["digest"])
    with open(meta_path + ".tmp", "w") as f:
        json.dump(
            {
                "params": params,
                "images": images,
                "blobs": unique,
                "unique_bytes": sum(b["size"] for b in unique),
            },
            f,
            indent=1,
        )
    os.replace(meta_path + ".tmp", meta_path)


if __name__ == "__main__":
    main()
