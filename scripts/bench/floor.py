#!/usr/bin/env python3
"""The floor of benchmark 6: read blobs from disk and PUT them monolithically
into a registry with plain parallel HTTP (POST /v2/<repo>/blobs/uploads/,
then PUT <location>&digest=<d> with the file as the body; one keep-alive
connection per thread, 1 MiB socket writes). No HEAD, no mount, no retry:
what this machine allows for these bytes.

    floor.py HOST:PORT IMAGES_JSON [--threads N] [--repo REPO]

Prints one JSON line: {"bytes", "blobs", "seconds", "mib_per_s"}.
"""
import argparse
import http.client
import json
import os
import queue
import sys
import threading
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("images_json")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--repo", default="floor/blobs")
    a = ap.parse_args()
    with open(a.images_json) as f:
        blobs = json.load(f)["blobs"]
    blobs.sort(key=lambda b: -b["size"])
    q = queue.Queue()
    for b in blobs:
        q.put(b)
    host, port = a.host.rsplit(":", 1)
    errors = []
    done_bytes = [0]
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection(host, int(port), timeout=600, blocksize=1 << 20)
        while True:
            try:
                b = q.get_nowait()
            except queue.Empty:
                break
            try:
                conn.request(
                    "POST",
                    f"/v2/{a.repo}/blobs/uploads/",
                    headers={"Content-Length": "0"},
                )
                r = conn.getresponse()
                r.read()
                if r.status != 202:
                    raise RuntimeError(f"POST upload: HTTP {r.status}")
                loc = urllib.parse.urlsplit(r.getheader("Location"))
                path = loc.path + ("?" + loc.query + "&" if loc.query else "?")
                path += "digest=" + urllib.parse.quote(b["digest"])
                with open(b["path"], "rb") as body:
                    conn.request(
                        "PUT",
                        path,
                        body=body,
                        headers={
                            "Content-Length": str(b["size"]),
                            "Content-Type": "application/octet-stream",
                        },
                    )
                    r = conn.getresponse()
                    r.read()
                if r.status != 201:
                    raise RuntimeError(f"PUT {b['digest']}: HTTP {r.status}")
                with lock:
                    done_bytes[0] += b["size"]
            except Exception as e:  # report, stop this worker
                errors.append(f"{b['digest']}: {e}")
                break
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(max(1, min(a.threads, len(blobs))))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    if errors:
        print("floor: " + "; ".join(errors), file=sys.stderr)
        sys.exit(1)
    print(
        json.dumps(
            {
                "bytes": done_bytes[0],
                "blobs": len(blobs),
                "seconds": round(secs, 3),
                "mib_per_s": round(done_bytes[0] / (1 << 20) / secs, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
