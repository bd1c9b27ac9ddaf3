#!/usr/bin/env python3
"""The floor of `pack` from a registry (issue 25): the same blobs GET by
plain parallel HTTP into files, no planning, no hashing. Before the timed
part it GETs each image's manifest once to learn which repository holds
which blob (untimed); then every unique blob (biggest first) is fetched
with N threads, one keep-alive connection each, 1 MiB reads, each into its
own file under OUT_DIR (deleted at the end).

    pack_floor.py HOST:PORT OUT_DIR REPO:TAG... [--threads N]

Prints one JSON line: {"bytes", "blobs", "seconds", "mib_per_s"}.
"""
import argparse
import http.client
import json
import os
import queue
import shutil
import sys
import threading
import time

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("out")
    ap.add_argument("refs", nargs="+")
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    host, port = a.host.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    blobs = {}
    for ref in a.refs:
        repo, tag = ref.rsplit(":", 1)
        conn.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"pack_floor: GET manifest {ref}: HTTP {r.status}")
        m = json.loads(body)
        for d in [m["config"]] + m["layers"]:
            blobs.setdefault(d["digest"], (repo, d["size"]))
    conn.close()
    os.makedirs(a.out, exist_ok=True)
    q = queue.Queue()
    for d, (repo, size) in sorted(blobs.items(), key=lambda kv: -kv[1][1]):
        q.put((d, repo, size))
    errors, done = [], [0]
    lock = threading.Lock()

    def worker():
        c = http.client.HTTPConnection(host, int(port), timeout=600)
        while True:
            try:
                d, repo, size = q.get_nowait()
            except queue.Empty:
                break
            try:
                c.request("GET", f"/v2/{repo}/blobs/{d}")
                r = c.getresponse()
                if r.status != 200:
                    r.read()
                    raise RuntimeError(f"HTTP {r.status}")
                n = 0
                with open(os.path.join(a.out, d.replace(":", "_")), "wb") as f:
                    while True:
                        chunk = r.read(1 << 20)
                        if not chunk:
                            break
                        f.write(chunk)
                        n += len(chunk)
                if n != size:
                    raise RuntimeError(f"{n} of {size} bytes")
                with lock:
                    done[0] += n
            except Exception as e:
                errors.append(f"{d}: {e}")
                break
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(max(1, min(a.threads, len(blobs))))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    shutil.rmtree(a.out, ignore_errors=True)
    if errors:
        sys.exit("pack_floor: " + "; ".join(errors))
    print(json.dumps({"bytes": done[0], "blobs": len(blobs), "seconds": round(secs, 3),
                      "mib_per_s": round(done[0] / (1 << 20) / secs, 1)}))


if __name__ == "__main__":
    main()
