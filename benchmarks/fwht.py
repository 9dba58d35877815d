"""Native FWHT against fht-cpu, FFHT (ffht-unofficial), torch, numpy and a plain copy.

float32, in place, unnormalised, single thread, best of N with the contenders interleaved call by
call (so machine noise hits them alike); every contender timed in this run.
Prints the table and the ratios, writes results/fwht-<time>.h5 and .png.

    python benchmarks/fwht.py [--min-log 10] [--max-log 24] [--repeats 30]
"""
import argparse
import os
import sys

import numpy as np

from fobsgd_mpi import native, reference
from fobsgd_mpi.benchmarking import best_time, best_times_interleaved, format_table, line_plot, results_path, save_records


def contenders():
    """name -> (prepare, transform); prepare runs untimed before the contender's timings."""
    out = {}
    for isa in native.supported_isas():
        out[f"native-{isa}"] = (lambda isa=isa: native.set_isa(isa), lambda x: native.fwht_(x, normalize=False))
    try:
        import fht_cpu

        out["fht-cpu"] = (None, fht_cpu.fht_1d_f32)
    except ImportError:
        print("# fht-cpu not installed (make bench-deps); skipped", file=sys.stderr)
    try:
        import ffht

        out["ffht"] = (None, ffht.fht)
    except ImportError:
        print("# ffht-unofficial not installed (make bench-deps); skipped", file=sys.stderr)
    try:
        import torch

        torch.set_num_threads(1)

        def torch_fwht(x):
            t = torch.from_numpy(x)
            h, n = 1, x.shape[-1]
            while h < n:
                v = t.view(-1, 2, h)
                a, b = v[:, 0].clone(), v[:, 1]
                v[:, 0] += b
                torch.sub(a, b, out=b)
                h *= 2
            return x

        out["torch"] = (None, torch_fwht)
    except ImportError:
        pass
    out["numpy"] = (None, lambda x: reference.fwht_(x, normalize=False))
    return out


def run(min_log, max_log, repeats):
    records = []
    for log_n in range(min_log, max_log + 1):
        x = np.random.default_rng(log_n).standard_normal(1 << log_n).astype(np.float32)
        y = np.empty_like(x)
        slow = log_n > 20  # numpy and torch take up to a second a call there
        fns = {"copy": (None, lambda: np.copyto(y, x))}
        fns.update({name: (prepare, lambda fn=fn: fn(x)) for name, (prepare, fn) in contenders().items()
                    if not (slow and name in ("numpy", "torch"))})
        times = best_times_interleaved(fns, repeats)
        if slow:
            times.update({name: best_time(lambda fn=fn: fn(x), 2) for name, (_, fn) in contenders().items()
                          if name in ("numpy", "torch")})
        rec = {"log_n": log_n, **{f"{name}_s": t for name, t in times.items()}}
        native.set_isa(None)
        peers = [rec[k] for k in ("fht-cpu_s", "ffht_s") if k in rec]
        best_native = min(v for k, v in rec.items() if k.startswith("native-"))
        rec["speedup_vs_best_peer"] = min(peers) / best_native if peers else None
        rec["native_over_copy"] = best_native / rec["copy_s"]
        records.append(rec)
    return records


def plot(records, path):
    logs = [r["log_n"] for r in records]
    line_plot({k[:-2]: (logs, [r[k] * 1e3 for r in records]) for k in records[0] if k.endswith("_s")}, path,
              "length [log2 of float32 elements]", "time per transform, best of N [ms]", "in-place FWHT, one thread")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-log", type=int, default=10)
    p.add_argument("--max-log", type=int, default=24)
    p.add_argument("--repeats", type=int, default=100)
    args = p.parse_args(argv)
    with np.errstate(all="ignore"):  # repeated unnormalised transforms overflow to inf; timing is unaffected
        records = run(args.min_log, args.max_log, args.repeats)
    timing_keys = [k for k in records[0] if k.endswith("_s")]
    columns = [("log_n", "log2 n", "{:d}")] + [(k, f"{k[:-2]} [ms]", "{:.4f}") for k in timing_keys]
    scaled = [{**r, **{k: r[k] * 1e3 for k in timing_keys}} for r in records]
    columns += [("speedup_vs_best_peer", "best peer / native [x]", "{:.2f}"),
                ("native_over_copy", "native / copy [x]", "{:.2f}")]
    print(format_table(scaled, columns))
    path = results_path("fwht")
    units = {k: "s" for k in timing_keys} | {"speedup_vs_best_peer": "ratio", "native_over_copy": "ratio"}
    save_records(path, "fwht", records, units, meta={"dtype": "float32", "threads": 1, "repeats": args.repeats})
    plot(records, os.path.splitext(path)[0] + ".png")
    print(f"# wrote {path} and .png")


if __name__ == "__main__":
    main()
