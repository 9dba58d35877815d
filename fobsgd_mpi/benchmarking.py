"""What every benchmark shares: timing, a printed table with units, and the same records to HDF5.

Benchmarks return records (dicts); printing and saving are separate, so the table and the file
can never disagree.
"""
import datetime
import json
import os
import platform
import time

import numpy as np

STARTUP_ITERATIONS = 2  # the first iterations of a run carry start-up costs; medians leave them out


def steady_median(values):
    """Median of a per-iteration series of a run, its start-up iterations left out (one is kept)."""
    return float(np.median(values[min(STARTUP_ITERATIONS, len(values) - 1):]))


def steady_step_s(wall_s):
    """Median seconds per iteration from a run's cumulative `iterations/wall_s`, start-up left out."""
    return float(np.median(np.diff(wall_s[min(STARTUP_ITERATIONS, len(wall_s) - 1) - 1:])))


def best_time(fn, repeats=30, setup=None):
    """Best wall-clock seconds of `repeats` calls of fn() (setup() runs untimed before each)."""
    best = float("inf")
    for _ in range(repeats):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def best_times_interleaved(fns, repeats=30):
    """Best seconds per named fn() with the calls interleaved round by round, so a noisy spell on
    the machine hits every contender alike. Each timed call follows an untimed one of the same fn,
    so every contender starts with its data in cache. fns: name -> (prepare or None, fn)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, (prepare, fn) in fns.items():
            if prepare:
                prepare()
            fn()
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def format_table(records, columns):
    """columns: (key, header with unit, format). Returns the table as text, '#' header first."""
    heads = [h for _, h, _ in columns]
    rows = [[fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in columns] for r in records]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join(["# " + line(heads)] + ["  " + line(row) for row in rows])


def save_records(path, name, records, units, meta=None):
    """Write records as one dataset per key under group `name` of a new HDF5 file `path`."""
    import h5py

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        f.attrs["machine"] = f"{platform.node()} {platform.machine()} {platform.processor()}"
        f.attrs["meta"] = json.dumps(meta or {})
        g = f.create_group(name)
        for key in dict.fromkeys(k for r in records for k in r):
            values = [r.get(key) for r in records]
            if all(isinstance(v, str) for v in values):
                ds = g.create_dataset(key, data=np.array(values, dtype="S"))
            else:
                ds = g.create_dataset(key, data=np.array([np.nan if v is None else v for v in values], dtype=float))
            if key in units:
                ds.attrs["units"] = units[key]
    return path


def line_plot(series, path, xlabel, ylabel, title=None, logx=False, logy=True, base=2):
    """One PNG of named lines: series is {label: (xs, ys)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log", base=base)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_path(stem):
    """results/<stem>-<UTC time>.h5: one file per run, never overwritten."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return os.path.join("results", f"{stem}-{stamp}.h5")
