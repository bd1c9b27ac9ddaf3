#!/usr/bin/env python3
"""Markdown report of scripts/bench.sh: medians, ratios and the targets of
issue 5.

    report.py RESULTS_TSV INFO_TSV

RESULTS_TSV lines: case, tool, round, value ("FAIL" when a run failed).
Cases: 1 sync s, 2 re-sync s, 3 pack s, 3b bundle bytes, 4 peak RSS MiB,
5 verify s, 6 floor s. INFO_TSV lines: key, value.
"""
import statistics
import sys

MIB = 1 << 20


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            case, tool, _round, value = parts
            runs.setdefault((case, tool), []).append(value)
    return runs


def median(runs, case, tool):
    """(median or None, n ok, n failed)"""
    vals = runs.get((case, tool), [])
    ok = [float(v) for v in vals if v != "FAIL"]
    failed = len(vals) - len(ok)
    return (statistics.median(ok) if ok else None), len(ok), failed


def fmt_s(v):
    return "—" if v is None else f"{v:.2f} s"


def cell(runs, case, tool, fmt):
    m, ok, failed = median(runs, case, tool)
    if m is None and failed:
        return "FAILED"
    if m is None:
        return "not run"
    s = fmt(m)
    if failed:
        s += f" ({failed} failed)"
    return s


def main():
    runs = load(sys.argv[1])
    info = {}
    with open(sys.argv[2]) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            info[k] = v
    unique = int(info.get("unique_bytes", "0") or 0)
    out = []
    w = out.append
    w("# bundler benchmarks")
    w("")
    for k in ("params", "machine", "bundler", "skopeo", "registry"):
        if k in info:
            w(f"- {k}: {info[k]}")
    w(f"- unique blob bytes: {unique / MIB:.1f} MiB")
    w("")
    w("| # | benchmark | bundler | reference | ratio | target | met |")
    w("|---|---|---|---|---|---|---|")

    def ratio_row(num, label, case, ref_tool, target, limit, lower_is_better=True):
        b, _, _ = median(runs, case, "bundler")
        r, _, _ = median(runs, case, ref_tool)
        ratio = f"{b / r:.2f}×" if b is not None and r else "—"
        met = "—"
        if b is not None and r:
            met = "yes" if (b / r <= limit) == lower_is_better else "no"
        w(
            f"| {num} | {label} | {cell(runs, case, 'bundler', fmt_s)} | "
            f"{ref_tool} {cell(runs, case, ref_tool, fmt_s)} | {ratio} | {target} | {met} |"
        )

    if any(k[0] in ("1", "2") for k in runs):
        ratio_row(1, "sync into an empty registry", "1", "skopeo", "≤ 0.5×", 0.5)
        ratio_row(2, "re-sync, nothing changed", "2", "skopeo", "≤ 0.2×", 0.2)
    if any(k[0] == "3" for k in runs):
        ratio_row(3, "pack from a registry", "3", "skopeo", "≤ 0.5×", 0.5)
        b, _, _ = median(runs, "3b", "bundler")
        if b is not None and unique:
            over = (b / unique - 1) * 100
            w(
                f"| 3b | bundle size vs unique blob bytes | {b / MIB:.1f} MiB | "
                f"unique {unique / MIB:.1f} MiB | {over:+.2f} % | ≤ +1 % | {'yes' if over <= 1 else 'no'} |"
            )
    if any(k[0] == "4" for k in runs):
        b, _, _ = median(runs, "4", "bundler")
        w(
            f"| 4 | peak RSS, sync of one big layer | {cell(runs, '4', 'bundler', lambda v: f'{v:.1f} MiB')} | "
            f"skopeo {cell(runs, '4', 'skopeo', lambda v: f'{v:.1f} MiB')} | — | ≤ 64 MiB | "
            f"{'—' if b is None else ('yes' if b <= 64 else 'no')} |"
        )
    if any(k[0] == "5" for k in runs) and unique:
        b, _, _ = median(runs, "5", "bundler")
        s, _, _ = median(runs, "5", "sha256sum")
        thr = lambda t: f"{unique / MIB / t:.0f} MiB/s"
        ratio = f"{s / b:.2f}×" if b and s else "—"
        met = "—" if not (b and s) else ("yes" if s / b >= 0.9 else "no")
        w(
            f"| 5 | verify throughput | {cell(runs, '5', 'bundler', thr)} | "
            f"parallel sha256sum {cell(runs, '5', 'sha256sum', thr)} | {ratio} | ≥ 0.9× | {met} |"
        )
    if any(k[0] == "6" for k in runs) and unique:
        b, _, _ = median(runs, "1", "bundler")
        f_, _, _ = median(runs, "6", "floor")
        thr = lambda t: f"{unique / MIB / t:.0f} MiB/s"
        pct = f"{f_ / b * 100:.0f} %" if b and f_ else "—"
        met = "—" if not (b and f_) else ("yes" if f_ / b >= 0.7 else "no")
        w(
            f"| 6 | sync throughput vs the floor (parallel PUTs) | {cell(runs, '1', 'bundler', thr)} | "
            f"floor {cell(runs, '6', 'floor', thr)} | {pct} | ≥ 70 % | {met} |"
        )
    w("")
    w("Medians over the rounds; ratio = bundler / reference for times (5: throughput ratio).")
    w("")
    w("<details><summary>every run</summary>")
    w("")
    w("| case | tool | values |")
    w("|---|---|---|")
    for (case, tool), vals in sorted(runs.items()):
        w(f"| {case} | {tool} | {', '.join(vals)} |")
    w("")
    w("</details>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
