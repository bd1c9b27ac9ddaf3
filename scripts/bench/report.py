#!/usr/bin/env python3
"""Markdown report of scripts/bench.sh: a table of ratios against the
targets of issue 12, then every raw run.

    report.py RESULTS_TSV INFO_TSV

RESULTS_TSV lines: case, tool, round, value ("FAIL" when a run failed).
Time cases (seconds): sync, sync-resync, latency, latency-resync, scale,
scale-resync, floor, latency-floor, pack, verify. Byte figures of bundler
runs: <case>.read (bytes read), <case>.pushed (bytes uploaded),
pack.bytes. rss: peak RSS in MiB. INFO_TSV lines: key, value.
"""
import statistics
import sys

MIB = 1 << 20


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4:
                case, tool, rnd, value = parts
                runs.setdefault((case, tool), []).append((rnd, value))
    return runs


def med(runs, case, tool):
    ok = []
    for _, v in runs.get((case, tool), []):
        try:
            ok.append(float(v))
        except ValueError:
            pass
    return statistics.median(ok) if ok else None


def main():
    runs = load(sys.argv[1])
    info = {}
    with open(sys.argv[2]) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            info[k] = v
    out = []
    w = out.append
    w("# bundler benchmarks")
    w("")
    for k in ("params", "machine", "bundler", "skopeo", "registry"):
        if k in info:
            w(f"- {k}: {info[k]}")
    for k in ("unique_bytes", "scale_unique_bytes", "big_bytes"):
        if info.get(k):
            w(f"- {k.replace('_', ' ')}: {int(info[k]) / MIB:.1f} MiB")
    w("")
    w("| benchmark | bundler | reference | ratio | target | met |")
    w("|---|---|---|---|---|---|")

    def row(label, b, ref_label, r, ratio, target, met):
        w(f"| {label} | {b} | {ref_label} {r} | {ratio} | {target} | {met} |")

    def s(v):
        return "—" if v is None else f"{v:.2f} s"

    def time_ratio(label, case, limit):
        b, r = med(runs, case, "bundler"), med(runs, case, "skopeo")
        if b is None and r is None:
            return
        ratio = b / r if b is not None and r else None
        row(
            label,
            s(b),
            "skopeo",
            s(r),
            "—" if ratio is None else f"{ratio:.2f}×",
            "—" if limit is None else f"≤ {limit}×",
            "—" if ratio is None or limit is None else ("yes" if ratio <= limit else "no"),
        )

    time_ratio("sync into an empty registry", "sync", 0.45)
    time_ratio("re-sync, nothing changed", "sync-resync", 0.15)
    time_ratio(f"sync, {info.get('params', '').split('LATENCY_MS=')[-1] or '?'} ms each way", "latency", None)
    time_ratio("re-sync through the latency proxy", "latency-resync", None)
    time_ratio("scale: sync", "scale", 0.45)
    time_ratio("scale: re-sync", "scale-resync", 0.15)

    for case, label in (("sync", "sync"), ("latency", "sync via proxy"), ("scale", "scale sync"), ("rss", "big-layer sync")):
        rd, pu = med(runs, f"{case}.read", "bundler"), med(runs, f"{case}.pushed", "bundler")
        if rd is not None and pu:
            ratio = rd / pu
            row(f"bytes read per byte pushed, {label}", f"{rd / MIB:.1f} MiB read", "pushed", f"{pu / MIB:.1f} MiB",
                f"{ratio:.3f}", "≤ 1.05", "yes" if ratio <= 1.05 else "no")
    for case, label in (("sync-resync", "re-sync"), ("latency-resync", "re-sync via proxy"), ("scale-resync", "scale re-sync")):
        rd = med(runs, f"{case}.read", "bundler")
        if rd is not None:
            row(f"bytes read, {label}", f"{rd / MIB:.3f} MiB", "", "", "—", "< 1 MiB", "yes" if rd < MIB else "no")

    for case, floor_case, label in (("sync", "floor", "plain"), ("latency", "latency-floor", "via proxy")):
        b, f_ = med(runs, case, "bundler"), med(runs, floor_case, "floor")
        if b and f_:
            pct = f_ / b * 100
            unique = int(info.get("unique_bytes", "0") or 0)
            thr = lambda t: f"{unique / MIB / t:.0f} MiB/s" if unique else s(t)
            row(f"sync throughput vs the parallel-PUT floor ({label})", thr(b), "floor", thr(f_),
                f"{pct:.0f} %", "≥ 95 %" if case == "sync" else "—",
                ("yes" if pct >= 95 else "no") if case == "sync" else "—")

    b, r = med(runs, "rss", "bundler"), med(runs, "rss", "skopeo")
    if b is not None or r is not None:
        mib = lambda v: "—" if v is None else f"{v:.1f} MiB"
        row("peak RSS, sync of one big layer", mib(b), "skopeo", mib(r), "—", "≤ 64 MiB",
            "—" if b is None else ("yes" if b <= 64 else "no"))
    time_ratio("pack from a registry", "pack", None)
    b, f_ = med(runs, "pack", "bundler"), med(runs, "pack", "floor")
    if b and f_:
        row("pack vs its floor (parallel GETs into files)", s(b), "floor", s(f_),
            f"{f_ / b * 100:.0f} %", "—", "—")
    one = med(runs, "fanout-1", "bundler")
    one_read = med(runs, "fanout-1.read", "bundler")
    for k in (1, 2, 3):
        t, rd = med(runs, f"fanout-{k}", "bundler"), med(runs, f"fanout-{k}.read", "bundler")
        if t is None:
            continue
        row(f"fan-out to {k} registr{'y' if k == 1 else 'ies'}: time", s(t), "1 registry", s(one),
            f"{t / one:.2f}×" if one else "—", "≈ slowest target", "—")
        if rd is not None and one_read:
            row(f"fan-out to {k}: bytes read", f"{rd / MIB:.1f} MiB", "1 registry", f"{one_read / MIB:.1f} MiB",
                f"{rd / one_read:.3f}×", "1.0×", "yes" if rd / one_read <= 1.05 else "no")
    w_, n_ = med(runs, "slowcommit-wait", "bundler"), med(runs, "slowcommit-naive", "bundler")
    if w_ or n_:
        row("slow commit: time to success", s(w_), "re-upload at once", s(n_),
            f"{w_ / n_:.2f}×" if w_ and n_ else "—", "< 1×", "yes" if w_ and n_ and w_ < n_ else "—")
        pw, pn = med(runs, "slowcommit-wait.pushed", "bundler"), med(runs, "slowcommit-naive.pushed", "bundler")
        if pw and pn:
            row("slow commit: bytes uploaded", f"{pw / MIB:.0f} MiB", "re-upload at once", f"{pn / MIB:.0f} MiB",
                f"{pw / pn:.2f}×", "one upload", "—")
    b, r = med(runs, "verify", "bundler"), med(runs, "verify", "sha256sum")
    if b and r:
        row("verify", s(b), "parallel sha256sum", s(r), f"{b / r:.2f}×", "—", "—")
    w("")
    w("Medians over the rounds; ratio = bundler / reference. Each timed span runs")
    w("only the tool under test, into a fresh registry (re-sync: the one the sync filled).")
    w("")
    w("## every run")
    w("")
    w("| case | tool | round: value |")
    w("|---|---|---|")
    for (case, tool), vals in sorted(runs.items()):
        w(f"| {case} | {tool} | {', '.join(f'{r}: {v}' for r, v in vals)} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
