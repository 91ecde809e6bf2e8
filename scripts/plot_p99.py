#!/usr/bin/env python3
"""The p99-over-time plot of scripts/bench.sh: etcd put latency per half second.

    plot_p99.py --out FILE.png --title TEXT  LABEL=SAMPLES:WINDOW ...

SAMPLES holds one put per line, "unix-time-s latency-ms" (scripts/etcd_latency.py
--samples); WINDOW holds "start end" unix times of the case (for the pipeline: start and
the end of its etcdctl step). Each series is drawn from its own start; the end of its
window is marked. Needs matplotlib (bench.sh installs it when missing).
"""
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BIN_S = 0.5


def p99(values):
    values = sorted(values)
    return values[max(0, min(len(values) - 1, int(len(values) * 0.99)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="etcd put latency")
    ap.add_argument("series", nargs="+", help="LABEL=SAMPLES:WINDOW")
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    for spec in args.series:
        label, files = spec.split("=", 1)
        samples_file, window_file = files.split(":", 1)
        start, end = (float(x) for x in open(window_file).read().split()[:2])
        bins = {}
        for line in open(samples_file):
            at, ms = (float(x) for x in line.split())
            if at < start - BIN_S:
                continue
            bins.setdefault(int((at - start) // BIN_S), []).append(ms)
        xs = sorted(k for k in bins if k * BIN_S <= end - start + 1.0)
        if not xs:
            continue
        line, = ax.step([k * BIN_S for k in xs], [p99(bins[k]) for k in xs], where="post",
                        label=label, linewidth=1.4)
        ax.axvline(end - start, color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xlabel("seconds since the case started (dotted: end of the snapshot stream)")
    ax.set_ylabel("put latency p99 per 0.5 s, ms")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(args.title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out)


if __name__ == "__main__":
    main()
