"""Summary table and plots of one or more runs.

    python -m fobsgd_mpi.report results/RUN.h5 [more.h5 ...] [--out results/report]

Prints one line per run and writes <out>-accuracy.png and <out>-loss.png: test accuracy and loss
against iterations, against bytes sent per worker, and against wall-clock, runs overlaid.
"""
import argparse
import os
import sys

import h5py
import numpy as np

from .benchmarking import format_table


def load(path):
    with h5py.File(path) as f:
        ev = {k: f["evals"][k][:] for k in f["evals"]}
        return {"path": path, "algorithm": f.attrs["algorithm"], "n_workers": int(f.attrs["n_workers"]),
                "d": int(f.attrs["d"]), "steps": len(f["iterations/step"]), "evals": ev,
                # the rows plus the end-of-run exchange (results.py: the bytes rule)
                "bytes_up": int(f["iterations/bytes_up"][:].sum()) + int(f.attrs.get("finish_bytes_up", 0)),
                "bytes_down": int(f["iterations/bytes_down"][:].sum()) + int(f.attrs.get("finish_bytes_down", 0)),
                "wall_s": float(f["iterations/wall_s"][-1]) if len(f["iterations/wall_s"]) else float("nan"),
                "comm_s": float(f["iterations/comm_s"][:].sum()), "compute_s": float(f["iterations/compute_s"][:].sum())}


def plot(runs, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for metric, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss")):
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for r in runs:
            ev = r["evals"]
            name = f"{r['algorithm']} (n={r['n_workers']})"
            axes[0].plot(ev["step"] + 1, ev[metric], marker=".", label=name)
            axes[1].plot(ev["bytes_up_total"] / 1e6, ev[metric], marker=".", label=name)
            axes[2].plot(ev["wall_s"], ev[metric], marker=".", label=name)
        for ax, x in zip(axes, ("iteration", "MB sent up per worker", "wall-clock [s]")):
            ax.set_xlabel(x)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[1].set_xscale("log")
        if metric == "test_loss":
            for ax in axes:
                ax.set_yscale("log")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        path = f"{out}-{metric.split('_')[1]}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fobsgd_mpi.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="HDF5 files written by fobsgd_mpi.train")
    p.add_argument("--out", default=None, help="prefix of the PNG files (default: beside the first run)")
    args = p.parse_args(argv)
    missing = [r for r in args.runs if not os.path.exists(r)]
    if missing:
        print(f"error: no such run file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        runs = [load(r) for r in args.runs]
    except (OSError, KeyError) as exc:
        print(f"error: not a fobsgd_mpi run file ({exc})", file=sys.stderr)
        return 2
    rows = [{"algorithm": r["algorithm"], "n": r["n_workers"], "d": r["d"], "steps": r["steps"],
             "acc": r["evals"]["test_accuracy"][-1] if len(r["evals"]["step"]) else np.nan,
             "loss": r["evals"]["test_loss"][-1] if len(r["evals"]["step"]) else np.nan,
             "up": r["bytes_up"] / 1e6, "down": r["bytes_down"] / 1e6, "wall": r["wall_s"],
             "comm": r["comm_s"], "compute": r["compute_s"]} for r in runs]
    print(format_table(rows, [("algorithm", "algorithm", "{}"), ("n", "workers", "{:d}"), ("d", "d", "{:d}"),
                              ("steps", "steps", "{:d}"), ("acc", "test acc", "{:.4f}"), ("loss", "test loss", "{:.4f}"),
                              ("up", "up/worker [MB]", "{:.2f}"), ("down", "down/worker [MB]", "{:.2f}"),
                              ("wall", "wall [s]", "{:.1f}"), ("comm", "comm [s]", "{:.2f}"),
                              ("compute", "compute [s]", "{:.2f}")]))
    out = args.out or os.path.splitext(args.runs[0])[0]
    for path in plot(runs, out):
        print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
