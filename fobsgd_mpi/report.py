"""Summary table and plots of one or more runs.

    python -m fobsgd_mpi.report results/RUN.h5 [more.h5 ...] [--out results/report]

Prints one line per run (its status: complete, stopped, interrupted, failed, or "not closed" for a
job killed before it could close its file, such as one of its ranks killed with SIGKILL) and
writes <out>-accuracy.png and <out>-loss.png: test accuracy and loss against iterations, against
bytes sent per worker, and against wall-clock, runs overlaid, titled with what was run (data set,
model, d, workers, link), the target accuracy of time-to-accuracy runs as a dashed line, log axes
where the values span decades (benchmarking.log_axes).
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np

from .benchmarking import format_table, log_axes
from .config import OneLineParser
from .errors import EXIT_USAGE


def load(path):
    with h5py.File(path) as f:
        ev = {k: f["evals"][k][:] for k in f["evals"]}
        config = json.loads(f.attrs["config"])
        return {"path": path, "algorithm": f.attrs["algorithm"], "n_workers": int(f.attrs["n_workers"]),
                "d": int(f.attrs["d"]), "steps": len(f["iterations/step"]), "evals": ev,
                "dataset": config["dataset"], "model": config["model"], "target": config.get("target_accuracy"),
                "link": link_label(f.attrs.get("network_profile", "unshaped")),
                # the rows plus the end-of-run exchange (results.py: the bytes rule)
                "bytes_up": int(f["iterations/bytes_up"][:].sum()) + int(f.attrs.get("finish_bytes_up", 0)),
                "bytes_down": int(f["iterations/bytes_down"][:].sum()) + int(f.attrs.get("finish_bytes_down", 0)),
                "wall_s": float(f["iterations/wall_s"][-1]) if len(f["iterations/wall_s"]) else float("nan"),
                "comm_s": float(f["iterations/comm_s"][:].sum()), "compute_s": float(f["iterations/compute_s"][:].sum()),
                "status": str(f.attrs.get("status", "not closed"))}


def link_label(profile):
    """'100 Mbit/s per-node links' from a run's network_profile attribute ('unshaped' or JSON)."""
    if profile == "unshaped":
        return "unshaped links"
    p = json.loads(profile)
    if p.get("rate_bps") is None:  # --model-network without --bandwidth, before launch refused it
        return "unshaped links"
    rate = f"{p['rate_bps'] / 1e9:g} Gbit/s" if p["rate_bps"] >= 1e9 else f"{p['rate_bps'] / 1e6:g} Mbit/s"
    return f"unshaped, alpha-beta model of {rate}" if p.get("modelled_only") else f"{rate} {p['topology']} links"


def title(runs):
    """What was run: data set, model, d, workers and link, once per distinct setting."""
    return "; ".join(dict.fromkeys(f"{r['dataset']}, {r['model']}, d = {r['d']:,}, n = {r['n_workers']} workers, "
                                   f"{r['link']}" for r in runs))


def plot(runs, out):
    """<out>-accuracy.png and <out>-loss.png: the metric against iterations, bytes sent and
    wall-clock, runs overlaid, the target accuracy (if the runs had one) as a dashed line.
    Returns {path: (closed) figure}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classification = any(np.isfinite(r["evals"]["test_accuracy"]).any() for r in runs)
    metrics = [("test_accuracy", "test accuracy [fraction]")] if classification else []
    metrics.append(("test_loss", "test loss [nats]" if classification else "test loss [mean squared error]"))
    targets = {r["target"] for r in runs if r["target"] is not None}
    written = {}
    for metric, label in metrics:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.3))
        for r in runs:
            ev = r["evals"]
            name = f"{r['algorithm']} (n={r['n_workers']})"
            axes[0].plot(ev["step"] + 1, ev[metric], marker=".", label=name)
            axes[1].plot(ev["bytes_up_total"] / 1e6, ev[metric], marker=".", label=name)
            axes[2].plot(ev["wall_s"], ev[metric], marker=".", label=name)
        for ax, x in zip(axes, ("iteration [steps]", "sent up per worker [MB]", "wall-clock [s]")):
            log_axes(ax)
            ax.set_xlabel(x)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if metric == "test_accuracy":
                for t in targets:
                    ax.axhline(t, color="k", linestyle="--", linewidth=1, label=f"target {t:g}")
        axes[0].legend(fontsize=8)
        fig.suptitle(title(runs), fontsize=10)
        fig.tight_layout()
        path = f"{out}-{metric.split('_')[1]}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[path] = fig
    return written


def main(argv=None):
    p = OneLineParser(prog="python -m fobsgd_mpi.report", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="HDF5 files written by fobsgd_mpi.train")
    p.add_argument("--out", default=None, help="prefix of the PNG files (default: beside the first run)")
    try:
        args = p.parse_args(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    missing = [r for r in args.runs if not os.path.isfile(r)]
    if missing:
        print(f"error: no such run file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    runs = []
    for path in args.runs:
        try:
            runs.append(load(path))
        except (OSError, KeyError, ValueError) as exc:
            why = " ".join(str(exc).split())  # HDF5's messages span lines
            print(f"error: {path} is not a fobsgd_mpi run file ({why}); pass files written by fobsgd_mpi.train",
                  file=sys.stderr)
            return EXIT_USAGE
    rows = [{"algorithm": r["algorithm"], "n": r["n_workers"], "d": r["d"], "steps": r["steps"],
             "acc": r["evals"]["test_accuracy"][-1] if len(r["evals"]["step"]) else np.nan,
             "loss": r["evals"]["test_loss"][-1] if len(r["evals"]["step"]) else np.nan,
             "up": r["bytes_up"] / 1e6, "down": r["bytes_down"] / 1e6, "wall": r["wall_s"],
             "comm": r["comm_s"], "compute": r["compute_s"], "status": r["status"]} for r in runs]
    print(format_table(rows, [("algorithm", "algorithm", "{}"), ("n", "workers", "{:d}"), ("d", "d", "{:d}"),
                              ("steps", "steps", "{:d}"), ("acc", "test acc", "{:.4f}"), ("loss", "test loss", "{:.4f}"),
                              ("up", "up/worker [MB]", "{:.2f}"), ("down", "down/worker [MB]", "{:.2f}"),
                              ("wall", "wall [s]", "{:.1f}"), ("comm", "comm [s]", "{:.2f}"),
                              ("compute", "compute [s]", "{:.2f}"), ("status", "status", "{}")]))
    out = args.out or os.path.splitext(args.runs[0])[0]
    try:
        written = plot(runs, out)
    except OSError as exc:
        print(f"error: cannot write the plots {out}-*.png ({exc.strerror}); choose a writable --out", file=sys.stderr)
        return EXIT_USAGE
    for path in written:
        print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
