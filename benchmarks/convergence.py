"""Accuracy against bytes for every algorithm: MNIST-1D, the same epochs, seeds and workers.

For each model (mlp, cnn1d) and setting (iid data for every algorithm; for sgd, fo-sgd and
liec-sgd also Dirichlet alpha = 0.1 data, and half the workers per round with rank 1 a 2x
straggler), trains every algorithm with `mpirun -n WORKERS+1` and prints final test accuracy, bytes
each way per worker, their ratio to fp32 sgd, and wall-clock. Learning rates: each algorithm's
default unless --lr-grid is given, in which case the best final accuracy over the grid is kept
(tuned on the test set: an optimistic figure for every algorithm alike). Writes
results/convergence-<time>.h5 (the table) and a PNG of accuracy against bytes.

    python benchmarks/convergence.py [--workers 8] [--epochs 30] [--models mlp cnn1d] [--quick]
"""
import argparse
import os
import tempfile

from fobsgd_mpi import algorithms, models, report
from fobsgd_mpi.config import FLOAT, INT, SEED_MAX, ScriptParser, flag_type
from fobsgd_mpi.benchmarking import format_table, results_path, save_records
from fobsgd_mpi.jobs import error_line, mpirun, summary_of

HETEROGENEOUS = ("sgd", "fo-sgd", "liec-sgd")
SETTINGS = {  # name: (train flags, algorithms or None for all)
    "iid": ([], None),
    "dirichlet": (["--partition", "dirichlet", "--alpha", "0.1"], HETEROGENEOUS),
    "half+straggler": (["--participation", "0.5", "--slow-ranks", "1:2.0"], HETEROGENEOUS),
}


def train(workdir, workers, algorithm, model, partition, epochs, lr, seed):
    out = os.path.join(workdir, f"{algorithm}-{model}-{partition}-lr{lr}-s{seed}.h5")
    args = ["--algorithm", algorithm, "--model", model, "--epochs", epochs, "--seed", seed, "--quiet",
            "--out", out, "--eval-every", "25", *SETTINGS[partition][0]]
    if lr is not None:
        args += ["--lr", lr]
    done = mpirun(workers + 1, "fobsgd_mpi.train", *args, timeout=1800)
    summary = summary_of(done.stdout)
    if done.returncode or summary is None:
        err = error_line(done)
        return {"algorithm": algorithm, "model": model, "partition": partition, "lr": lr, "error": err}, None
    return {"algorithm": algorithm, "model": model, "partition": partition, "lr": lr or "default",
            "accuracy": summary["final_test_accuracy"], "bytes_up": summary["bytes_up_per_worker"],
            "bytes_down": summary["bytes_down_per_worker"], "wall_s": summary["wall_s"], "error": ""}, out


def main(argv=None):
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=flag_type(INT, bounds=(1, 1023)), default=8)
    p.add_argument("--epochs", type=flag_type(FLOAT, bounds=(0, 1e6), ends="(]"), default=30)
    p.add_argument("--models", nargs="+", default=["mlp", "cnn1d"], choices=models.MODELS)
    p.add_argument("--algorithms", nargs="+", default=algorithms.names(), choices=algorithms.names())
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--lr-grid", type=flag_type(FLOAT, bounds=(0, 1e4), ends="(]"), nargs="*", default=None)
    p.add_argument("--seed", type=flag_type(INT, bounds=(0, SEED_MAX)), default=0)
    p.add_argument("--quick", action="store_true", help="2 workers, 2 epochs, mlp only (a smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.workers, args.epochs, args.models = 2, 2, ["mlp"]
    workdir = tempfile.mkdtemp(prefix="convergence-", dir="results" if os.path.isdir("results") else None)
    records, files = [], []
    for model in args.models:
        for partition in args.settings:
            only = SETTINGS[partition][1]
            for algorithm in args.algorithms:
                if only and algorithm not in only:
                    continue
                best = None
                for lr in args.lr_grid or [None]:
                    rec, out = train(workdir, args.workers, algorithm, model, partition, args.epochs, lr, args.seed)
                    if best is None or rec.get("accuracy", -1) > best[0].get("accuracy", -1):
                        best = (rec, out)
                records.append(best[0])
                if best[1]:
                    files.append(best[1])
                print(f"# {model} {partition} {algorithm}: {best[0]}", flush=True)
    for r in records:
        ref = next((s for s in records if s["algorithm"] == "sgd" and s["model"] == r["model"]
                    and s["partition"] == r["partition"] and "accuracy" in s), None)
        if ref and "accuracy" in r:
            r["acc_gap_pp"] = 100 * (ref["accuracy"] - r["accuracy"])
            r["fewer_bytes_up"] = ref["bytes_up"] / r["bytes_up"]
            r["fewer_bytes_down"] = ref["bytes_down"] / r["bytes_down"]
    print(f"# MNIST-1D, {args.workers} workers + server, {args.epochs} epochs, seed {args.seed}")
    print(format_table(records, [("model", "model", "{}"), ("partition", "data", "{}"), ("algorithm", "algorithm", "{}"),
                                 ("lr", "lr", "{}"), ("accuracy", "test acc", "{:.4f}"),
                                 ("acc_gap_pp", "behind sgd [pp]", "{:.2f}"),
                                 ("bytes_up", "up/worker [B]", "{:.3e}"), ("fewer_bytes_up", "sgd/this up [x]", "{:.1f}"),
                                 ("fewer_bytes_down", "sgd/this down [x]", "{:.1f}"), ("wall_s", "wall [s]", "{:.1f}"),
                                 ("error", "error", "{}")]))
    path = results_path("convergence")
    save_records(path, "convergence", [{k: (str(v) if k in ("lr", "error") else v) for k, v in r.items()}
                                       for r in records],
                 {"bytes_up": "bytes per worker, whole run", "bytes_down": "bytes per worker, whole run",
                  "wall_s": "s", "acc_gap_pp": "percentage points", "accuracy": "fraction"},
                 meta=vars(args))
    if files:
        report.plot([report.load(f) for f in files], os.path.splitext(path)[0])
    print(f"# wrote {path} and its PNGs; runs in {workdir}")


if __name__ == "__main__":
    main()
