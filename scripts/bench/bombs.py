#!/usr/bin/env python3
"""Peak RSS and time of bundler refusing input bombs, at several sizes
(issue 20 items 1-3). Runnable by anyone; NOT part of the test suite.

    scripts/bench/bombs.py [BUNDLER_BIN]

Cases, each generated on the fly under a temporary directory:
  long-name   a chart with charts/bomb.tgz whose GNU long name is N MiB
              (`pack` of the chart directory)
  subcharts   a chart with K subchart archives of 240 MiB expanded each
              (4 files of 60 MiB zeros; `pack`)
  deep-yaml   values.yaml of flow sequences nested N deep (`pack`)
  tar-dirs    a tar of N/2 directories then N/2 repeats of one directory
              (`inspect`: the bundle index is built, then bundle.json is
              found missing)
Figures: wall seconds and max RSS from /usr/bin/time -v.
"""
import gzip
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zlib

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "../../target/debug/bundler")


def header(name, typeflag, size):
    t = tarfile.TarInfo(name if len(name) < 100 else "x")
    t.size = size
    t.type = typeflag
    t.mode = 0o644
    return t.tobuf(format=tarfile.GNU_FORMAT)


class Gz:
    """Streaming gzip writer (zlib level 1), as bytes in memory."""

    def __init__(self):
        self.c = zlib.compressobj(1, zlib.DEFLATED, 31)
        self.out = []

    def write(self, b):
        self.out.append(self.c.compress(b))

    def fill(self, byte, n):
        chunk = bytes([byte]) * (1 << 20)
        while n > 0:
            k = min(n, len(chunk))
            self.write(chunk[:k])
            n -= k

    def pad(self, n):
        self.write(b"\0" * ((512 - n % 512) % 512))

    def finish(self):
        self.out.append(self.c.flush())
        return b"".join(self.out)


def long_name_bomb(n):
    g = Gz()
    chart = b"apiVersion: v2\nname: bomb\nversion: 1.0.0\n"
    g.write(header("bomb/Chart.yaml", b"0", len(chart)))
    g.write(chart)
    g.pad(len(chart))
    g.write(header("././@LongLink", b"L", n))
    g.write(b"bomb/")
    g.fill(ord("a"), n - 5)
    g.pad(n)
    g.write(header("bomb/x", b"0", 1) + b"x" + b"\0" * (511 + 1024))
    return g.finish()


def zeros_subchart(name, files, size):
    g = Gz()
    chart = f"apiVersion: v2\nname: {name}\nversion: 1.0.0\n".encode()
    g.write(header(f"{name}/Chart.yaml", b"0", len(chart)))
    g.write(chart)
    g.pad(len(chart))
    for i in range(files):
        g.write(header(f"{name}/zeros{i}", b"0", size))
        g.fill(0, size)
        g.pad(size)
    g.write(b"\0" * 1024)
    return g.finish()


def chart_dir(root, values=b"a: 1\n", extra=()):
    d = os.path.join(root, "chart")
    os.makedirs(os.path.join(d, "charts"), exist_ok=True)
    with open(os.path.join(d, "Chart.yaml"), "w") as f:
        f.write("apiVersion: v2\nname: c\nversion: 1.0.0\n")
    with open(os.path.join(d, "values.yaml"), "wb") as f:
        f.write(values)
    for rel, data in extra:
        with open(os.path.join(d, rel), "wb") as f:
            f.write(data)
    m = os.path.join(root, "manifest.yaml")
    with open(m, "w") as f:
        f.write("apiVersion: bundler/v1\nkind: BundleManifest\n"
                "metadata: {name: c, version: 1.0.0}\n"
                f"spec:\n  charts:\n    - name: c\n      path: {d}\n")
    return m


def measure(root, args):
    r = subprocess.run(["/usr/bin/time", "-v", BIN, *args], cwd=root,
                       capture_output=True, text=True)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)[1])
    wall = re.search(r"Elapsed \(wall clock\) time .*: (\S+)", r.stderr)[1]
    m, s = wall.split(":")[-2:]
    secs = int(m) * 60 + float(s)
    err = [l for l in r.stderr.splitlines() if l.startswith("error")]
    return secs, rss, (err[0][:160] if err else "(no error line)"), len(r.stderr)


def row(case, size, root, args):
    secs, rss, err, n = measure(root, args)
    print(f"{case:10} {size:>12} {secs:7.2f} s {rss / 1024:7.1f} MiB  "
          f"stderr {n} B: {err}", flush=True)


def main():
    print(f"binary: {BIN}")
    for mib in (16, 64, 256):
        with tempfile.TemporaryDirectory() as root:
            m = chart_dir(root, extra=[("charts/bomb-1.0.0.tgz", long_name_bomb(mib << 20))])
            row("long-name", f"{mib} MiB", root, ["pack", m, "-o", "out"])
    sub = zeros_subchart("big", 4, 60 << 20)
    for k in (1, 3, 6):
        with tempfile.TemporaryDirectory() as root:
            extra = [(f"charts/big{i}-1.0.0.tgz", sub) for i in range(k)]
            m = chart_dir(root, extra=extra)
            row("subcharts", f"{k} x 240 MiB", root, ["pack", m, "-o", "out"])
    for depth in (64_000, 150_000, 200_000):
        with tempfile.TemporaryDirectory() as root:
            v = f"a: {'[' * depth}1{']' * depth}\n".encode()
            m = chart_dir(root, values=v)
            row("deep-yaml", f"{depth} deep", root, ["pack", m, "-o", "out"])
    for n in (100_000, 200_000, 400_000):
        with tempfile.TemporaryDirectory() as root:
            p = os.path.join(root, "dirs.bundle.tar")
            with open(p, "wb") as f:
                for i in range(n // 2):
                    f.write(header(f"d{i:07}/", b"5", 0))
                for _ in range(n // 2):
                    f.write(header("d9999999/", b"5", 0))
                f.write(b"\0" * 1024)
            row("tar-dirs", f"{n} entries", root, ["inspect", p])


if __name__ == "__main__":
    main()
