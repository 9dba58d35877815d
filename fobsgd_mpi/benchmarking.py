"""What every benchmark shares: timing, a printed table with units, and the same records to HDF5.

Benchmarks return records (dicts); printing and saving are separate, so the table and the file
can never disagree.
"""
import argparse
import datetime
import itertools
import json
import os
import platform
import re
import shlex
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
    """Write records as one dataset per key under group `name` of a new HDF5 file `path`; the root
    attributes say when, where and from which git commit."""
    import h5py

    from .results import git_commit

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        f.attrs["machine"] = f"{platform.node()} {platform.machine()} {platform.processor()}"
        f.attrs["git_commit"] = git_commit()
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


def link_text(text):
    """argparse type of a benchmark's link: "none" (unshaped) or a rate such as 100mbit, checked as
    fobsgd_mpi.launch checks --bandwidth and kept as written for it."""
    from .launch import rate_text

    return text if text == "none" else rate_text(text)


def rate_of(link):
    """Bits per second of a link that link_text accepted; "none" (unshaped) is infinitely fast."""
    from .launch import parse_rate

    return float("inf") if link == "none" else parse_rate(link)


def link_traffic(full, one_step, steps):
    """The busiest interface's bytes per training step and at start-up, each way.

    full and one_step are the launcher's counters ({rank: (tx, rx)}, launch.link_bytes) of a run of
    `steps` steps and of the same run stopped after its first step. Start-up is all of the one-step
    run: MPI connections, the data shards, the handshake and the first step, which also opens
    connections, and the run's end (LIEC-SGD's final model average, which both runs make once);
    each rank's later steps moved (full - one_step) / (steps - 1) a step."""
    ranks = list(full)
    per_step = [[(full[r][i] - one_step[r][i]) / (steps - 1) for r in ranks] for i in (0, 1)]
    return {"node_tx_per_step": max(per_step[0]), "node_rx_per_step": max(per_step[1]),
            "node_tx_startup": max(one_step[r][0] for r in ranks),
            "node_rx_startup": max(one_step[r][1] for r in ranks)}


LINK_UNITS = {"node_tx_per_step": "bytes per training step (steps 2..N) sent by the busiest rank's interface",
              "node_rx_per_step": "bytes per training step (steps 2..N) received by the busiest rank's interface",
              "node_tx_startup": "bytes sent by the busiest rank's interface in a run stopped after its first step "
                                 "(start-up, that step and the run's end)",
              "node_rx_startup": "bytes received by the busiest rank's interface in a run stopped after its first "
                                 "step (start-up, that step and the run's end)"}


LOG_SPAN = 8  # an axis whose largest value is this many times its smallest or more is drawn log


def log_axes(ax, base=10):
    """Log scale on each axis whose plotted values are all positive and span LOG_SPAN or more
    (`base` for x): ranks 2..16, bytes or seconds over decades. Under two decades the ticks are
    1-2-5 (or powers of `base`) in plain numbers, and minor ticks are never labelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for name in "xy":
        values = np.concatenate([np.asarray(getattr(line, f"get_{name}data")(), float) for line in ax.lines])
        values = values[np.isfinite(values)]
        if not (values.size and values.min() > 0 and values.max() >= LOG_SPAN * values.min()):
            continue
        b = base if name == "x" else 10
        getattr(ax, f"set_{name}scale")("log", base=b)
        axis = getattr(ax, f"{name}axis")
        if values.max() < 100 * values.min():
            axis.set_major_locator(LogLocator(b, subs=(1, 2, 5) if b == 10 else (1,)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def check_units(*labels):
    """Every axis label names its unit in brackets: 'time per iteration [ms]'."""
    for label in labels:
        if not re.search(r"\[.+\]", label):
            raise ValueError(f"axis label {label!r} has no [unit]")


def line_plot(series, path, xlabel, ylabel, title, base=10):
    """One PNG of named lines, series {label: (xs, ys)}; log axes where the values span decades
    (log_axes).
    Returns the (closed) matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_units(xlabel, ylabel)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    log_axes(ax, base)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def out_file(text):
    """argparse type of a benchmark's --out: refused before the run if it cannot be written there (a
    benchmark writes its file at the end, so a bad path would lose the whole run); replaced if there."""
    from types import SimpleNamespace

    from .results import output_problem

    problem = output_problem(SimpleNamespace(out=text, overwrite=True))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def train_flags_type(reserved, setter):
    """argparse type of a benchmark's --train-flags: fobsgd_mpi.train flags for its runs, checked as
    train checks them, and none of `reserved`, the flags `setter` (the benchmark, in words) sets."""
    from .config import parse_config
    from .errors import UsageError

    def parse(text):
        flags = shlex.split(text)
        taken = sorted({f.split("=")[0] for f in flags if f.split("=")[0] in reserved})
        if taken:
            raise argparse.ArgumentTypeError(f"{', '.join(taken)} is set by {setter} itself; leave it out")
        try:
            parse_config(flags)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(f"train refuses {text!r}: {exc}") from None
        return flags

    return parse


def results_path(stem, out=None):
    """`out` if given (a benchmark's --out, replaced if there), else results/<stem>-<UTC time>.h5:
    one file per run, never overwritten."""
    if out:
        return out
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return os.path.join("results", f"{stem}-{stamp}.h5")


def run_grid(run_point, *axes, keep=lambda *point: True):
    """run_point(*point) for each point of the product of `axes` (the last varies fastest) that
    `keep` accepts, each record printed as it comes (a long sweep shows its progress); the records."""
    records = []
    for point in itertools.product(*axes):
        if keep(*point):
            records.append(run_point(*point))
            print(f"# {records[-1]}", flush=True)
    return records
