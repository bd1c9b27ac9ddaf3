#!/usr/bin/env python3
"""Check a benchmark run's result (outside any timed span): every image of
IMAGES_JSON is in the registry at HOST:PORT under its tag with its manifest
digest. Exit 1 naming every wrong image.

    check_pushed.py HOST:PORT IMAGES_JSON [--name-key ref|repo_tag]

`ref` names images as skopeo and bundler push them with the benchmark's
configs (the reference without its registry, under HOST:PORT).
"""
import argparse
import hashlib
import json
import sys
import urllib.request

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("images_json")
    a = ap.parse_args()
    with open(a.images_json) as f:
        images = json.load(f)["images"]
    bad = []
    for img in images:
        repo, tag = img["ref"].rsplit(":", 1)
        url = f"http://{a.host}/v2/{repo}/manifests/{tag}"
        try:
            req = urllib.request.Request(url, headers={"Accept": ACCEPT})
            with urllib.request.urlopen(req, timeout=30) as r:
                got = "sha256:" + hashlib.sha256(r.read()).hexdigest()
        except Exception as e:  # noqa: BLE001 - report any failure
            got = f"error {e}"
        if got != img["manifest_digest"]:
            bad.append(f"{img['ref']}: {got}, expected {img['manifest_digest']}")
    if bad:
        print("WRONG RESULT:\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
