"""Accuracy against bytes for every algorithm on equal terms: the same learning-rate budget, chosen
on a validation split, then the mean and spread over seeds.

For each model (mlp, cnn1d) and data split over the workers (iid; Dirichlet alpha = 0.1), every
algorithm gets the same grid of learning rates around its own default (--lr-factors times the
default). Each is trained once (seed 0) on the training set less a held-out validation part
(--validation-fraction, the same rows for every algorithm) and judged by its final accuracy on
that part: the test set is never looked at. The best learning rate is then trained with
--seeds seeds on the whole training set and scored on the test set: mean and standard deviation of
the final test accuracy, bytes each way per worker, their ratio to fp32 sgd, wall-clock. Writes
results/convergence-<time>.h5 (the table), a PNG of accuracy against bytes, and keeps every run's
HDF5 file.

    python benchmarks/convergence.py [--workers 8] [--epochs 30] [--models mlp cnn1d] [--quick]
"""
import argparse
import os
import tempfile

import numpy as np

from fobsgd_mpi import algorithms, data, models, report
from fobsgd_mpi.benchmarking import format_table, results_path, save_records
from fobsgd_mpi.config import FLOAT, INT, ScriptParser, flag_type
from fobsgd_mpi.jobs import error_line, mpirun, summary_of

SETTINGS = {  # name: train flags
    "iid": [],
    "dirichlet": ["--partition", "dirichlet", "--alpha", "0.1"],
    "half+straggler": ["--participation", "0.5", "--slow-ranks", "1:2.0"],
}
LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def write_validation_split(dataset, fraction, path):
    """The training set of `dataset` split into npz arrays: x_train / y_train the rows kept for
    training, x_test / y_test the held-out validation rows (a fixed permutation)."""
    full = data.load(dataset)
    order = np.random.default_rng(12345).permutation(len(full.x_train))
    held = int(round(fraction * len(order)))
    val, kept = order[:held], order[held:]
    np.savez(path, x_train=full.x_train[kept], y_train=full.y_train[kept],
             x_test=full.x_train[val], y_test=full.y_train[val])
    return f"npz:{path}"


def train(workdir, args, dataset, algorithm, model, setting, lr, seed, tag):
    out = os.path.join(workdir, f"{tag}-{algorithm}-{model}-{setting}-lr{lr:g}-s{seed}.h5")
    flags = ["--algorithm", algorithm, "--model", model, "--dataset", dataset, "--epochs", args.epochs,
             "--seed", seed, "--lr", lr, "--quiet", "--out", out, "--eval-every", "25", *SETTINGS[setting]]
    done = mpirun(args.workers + 1, "fobsgd_mpi.train", *flags, timeout=3600)
    summary = summary_of(done.stdout)
    if done.returncode or summary is None:
        return {"error": error_line(done)}, None
    return summary, out


def measure(workdir, args, validation, algorithm, model, setting):
    """Tune the learning rate on the validation split, then train the seeds with it."""
    default = algorithms.get(algorithm).default_lr
    tried = {}
    for factor in args.lr_factors:
        summary, _ = train(workdir, args, validation, algorithm, model, setting, default * factor, 0, "tune")
        tried[factor] = summary.get("final_test_accuracy", float("nan"))  # on the validation rows
    usable = {f: a for f, a in tried.items() if np.isfinite(a)}
    record = {"algorithm": algorithm, "model": model, "setting": setting,
              "validation": " ".join(f"{f:g}:{a:.3f}" for f, a in tried.items())}
    if not usable:
        return {**record, "error": "every learning rate of the grid failed"}, []
    factor = max(usable, key=usable.get)
    lr = default * factor
    record.update(lr=lr, lr_factor=factor)
    runs, files = [], []
    for seed in range(args.seeds):
        summary, out = train(workdir, args, args.dataset, algorithm, model, setting, lr, seed, "final")
        if "error" in summary:
            return {**record, "error": f"seed {seed}: {summary['error']}"}, files
        runs.append(summary)
        files.append(out)
    accuracy = np.array([s["final_test_accuracy"] for s in runs])
    record.update(accuracy=float(accuracy.mean()), accuracy_std=float(accuracy.std(ddof=1)) if len(runs) > 1 else 0.0,
                  bytes_up=runs[0]["bytes_up_per_worker"], bytes_down=runs[0]["bytes_down_per_worker"],
                  wall_s=float(np.mean([s["wall_s"] for s in runs])), error="")
    return record, files


def compare_with_sgd(records):
    for r in records:
        ref = next((s for s in records if s["algorithm"] == "sgd" and s["model"] == r["model"]
                    and s["setting"] == r["setting"] and "accuracy" in s), None)
        if ref and "accuracy" in r:
            r["acc_gap_pp"] = 100 * (ref["accuracy"] - r["accuracy"])
            r["fewer_bytes_up"] = ref["bytes_up"] / r["bytes_up"]
            r["fewer_bytes_down"] = ref["bytes_down"] / r["bytes_down"]


def main(argv=None):
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=flag_type(INT, bounds=(1, 1023)), default=8)
    p.add_argument("--epochs", type=flag_type(FLOAT, bounds=(0, 1e6), ends="(]"), default=30)
    p.add_argument("--dataset", default="mnist1d", choices=data.DATASETS)
    p.add_argument("--models", nargs="+", default=["mlp", "cnn1d"], choices=models.MODELS)
    p.add_argument("--algorithms", nargs="+", default=algorithms.names(), choices=algorithms.names())
    p.add_argument("--settings", nargs="+", default=["iid", "dirichlet"], choices=list(SETTINGS))
    p.add_argument("--lr-factors", type=flag_type(FLOAT, bounds=(0, 1e4), ends="(]"), nargs="+",
                   default=list(LR_FACTORS), help="the grid: these times each algorithm's default learning rate")
    p.add_argument("--validation-fraction", type=flag_type(FLOAT, bounds=(0, 0.9), ends="(]"), default=0.2,
                   help="share of the training set held out to choose the learning rate")
    p.add_argument("--seeds", type=flag_type(INT, bounds=(1, 100)), default=3)
    p.add_argument("--quick", action="store_true",
                   help="2 workers, 1 epoch, mlp, iid, factors 0.5 and 1, 2 seeds (a smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.workers, args.epochs, args.models, args.settings = 2, 1, ["mlp"], ["iid"]
        args.lr_factors, args.seeds = [0.5, 1.0], 2
    workdir = tempfile.mkdtemp(prefix="convergence-", dir="results" if os.path.isdir("results") else None)
    validation = write_validation_split(args.dataset, args.validation_fraction,
                                        os.path.join(workdir, "validation.npz"))
    records, files = [], []
    for model in args.models:
        for setting in args.settings:
            for algorithm in args.algorithms:
                record, runs = measure(workdir, args, validation, algorithm, model, setting)
                records.append(record)
                files += runs
                print(f"# {model} {setting} {algorithm}: {record}", flush=True)
    compare_with_sgd(records)
    print(f"# {args.dataset}, {args.workers} workers + server, {args.epochs} epochs; learning rate chosen on "
          f"{args.validation_fraction:g} of the training set held out; test accuracy over {args.seeds} seeds")
    print(format_table(records, [("model", "model", "{}"), ("setting", "data", "{}"),
                                 ("algorithm", "algorithm", "{}"), ("lr", "lr", "{:g}"),
                                 ("accuracy", "test acc", "{:.4f}"), ("accuracy_std", "+-std", "{:.4f}"),
                                 ("acc_gap_pp", "behind sgd [pp]", "{:.2f}"),
                                 ("bytes_up", "up/worker [B]", "{:.3e}"), ("fewer_bytes_up", "sgd/this up [x]", "{:.1f}"),
                                 ("fewer_bytes_down", "sgd/this down [x]", "{:.1f}"), ("wall_s", "wall [s]", "{:.1f}"),
                                 ("error", "error", "{}")]))
    path = results_path("convergence")
    save_records(path, "convergence", [{k: (str(v) if k in ("validation", "error") else v) for k, v in r.items()}
                                       for r in records],
                 {"bytes_up": "bytes per worker, whole run", "bytes_down": "bytes per worker, whole run",
                  "wall_s": "s, mean over seeds", "acc_gap_pp": "percentage points",
                  "accuracy": "fraction, mean over seeds", "accuracy_std": "fraction, sample std over seeds"},
                 meta=vars(args))
    if files:
        report.plot([report.load(f) for f in files], os.path.splitext(path)[0])
    print(f"# wrote {path} and its PNGs; runs in {workdir}")


if __name__ == "__main__":
    main()
