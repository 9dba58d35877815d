"""Accuracy against bytes for every algorithm on equal terms: the same learning-rate budget, chosen
on a validation split, then the mean and spread over seeds.

For each model (mlp, cnn1d) and data split over the workers (iid; Dirichlet alpha = 0.1), every
algorithm gets the same grid of learning rates around its own default (--lr-factors times the
default). Each is trained once (seed 0) on the training set less a held-out validation part
(--validation-fraction, the same rows for every algorithm) and judged by its final accuracy on that
part: the test set is never looked at. Where the best lies at an end of the grid, the grid grows
past that end by a factor of 2, up to --grid-extensions times; the table says where the best still
lies at an end ("best at grid end"). The best learning rate is then trained with --seeds seeds on
the whole training set and scored on the test set: mean and standard deviation of the final test
accuracy, bytes each way per worker, their ratio to fp32 sgd, wall-clock. A seed whose data split
train refuses (a Dirichlet shard smaller than the batch: exit 2, before any step) has no outcome and
is replaced by the next seed number, up to --seeds replacements, and the table names it; any other
failure of a seed (a divergence) fails the row. Writes results/convergence-<time>.h5 or --out (the
table), beside it <out>-accuracy-bytes.png (the table as a plot) and
<out>-<model>-<setting>-accuracy.png (each algorithm's first seed over the run), and keeps every
run's HDF5 file in --workdir, where a second invocation finds the runs that completed and does not
repeat them. Each stage (model, data split) runs as two mpirun jobs, the tuning runs of every
algorithm in one and their seeds in the other (fobsgd_mpi.batch), so the ranks start twice a stage
(once more where a seed is replaced), not once a run.

    python benchmarks/convergence.py [--workers 8] [--epochs 30] [--models mlp cnn1d] [--workdir DIR] [--quick]
    python benchmarks/convergence.py --models mlp --algorithms sgd fo-sgd --train-flags="--worker-scale drive"
"""
import argparse
import hashlib
import os
import tempfile

import h5py
import numpy as np

from fobsgd_mpi import algorithms, data, models, report
from fobsgd_mpi.benchmarking import format_table, out_file, results_path, save_records, train_flags_type
from fobsgd_mpi.config import FLOAT, INT, ScriptParser, flag_type
from fobsgd_mpi.errors import EXIT_USAGE
from fobsgd_mpi.jobs import error_line, mpirun_batch

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


# train flags the protocol sets itself (planned_run, SETTINGS), which --train-flags may not
PROTOCOL_FLAGS = ("--algorithm", "--model", "--dataset", "--epochs", "--seed", "--lr", "--out", "--overwrite",
                  "--resume", "--eval-every", "--partition", "--alpha", "--participation", "--slow-ranks", "--config")
train_flags = train_flags_type(PROTOCOL_FLAGS, "the protocol")


def planned_run(workdir, args, dataset, algorithm, model, setting, lr, seed, tag):
    """(results file, train's command line) of one run of the protocol. Only a run whose file is
    not complete is run (train_all), so --overwrite replaces nothing but a cut-short run's file.
    With --train-flags the file name carries a digest of them, so runs of other flags in the same
    --workdir are not taken for these."""
    variant = "-" + hashlib.sha1(" ".join(args.train_flags).encode()).hexdigest()[:8] if args.train_flags else ""
    out = os.path.join(workdir, f"{tag}-{algorithm}-{model}-{setting}{variant}-lr{lr:g}-s{seed}.h5")
    return out, ["--algorithm", algorithm, "--model", model, "--dataset", dataset, "--epochs", args.epochs,
                 "--seed", seed, "--lr", lr, "--quiet", "--out", out, "--overwrite", "--eval-every", "25",
                 *SETTINGS[setting], *args.train_flags]


def complete(out):
    try:
        with h5py.File(out, "r") as f:
            return f.attrs.get("status") == "complete"
    except OSError:
        return False


def train_all(workdir, args, planned, name):
    """Every planned run that `workdir` does not hold complete already, in one mpirun job (they
    share one start-up). Returns, for each run in order, its results as the HDF5 file has them
    (report.load: final accuracy, bytes, wall-clock) or {"error": the reason it has none}."""
    todo = [flags for out, flags in planned if not complete(out)]
    records, done = [], None
    if todo:
        done, records = mpirun_batch(args.workers + 1, todo, os.path.join(workdir, f"{name}.json"),
                                     timeout=3600 * len(todo))
    why = dict(zip((flags[flags.index("--out") + 1] for flags in todo),
                   ({"error": error_line(r["stderr"]), "refused": r["returncode"] == EXIT_USAGE} for r in records)))
    results = []
    for out, _ in planned:
        if complete(out):
            run = report.load(out)
            results.append({**run, "accuracy": float(run["evals"]["test_accuracy"][-1])})
        else:
            results.append(why.get(out) or {"error": f"the job ended before this run: {error_line(done.stderr)}"})
    return results


def beyond_the_edge(tried):
    """The factor to try next when the best finite validation accuracy of `tried` ({factor:
    accuracy}) lies at an end of the factors tried: twice the largest or half the smallest; else
    None. A grid that stops where the accuracy still rises would leave the algorithms that like
    a larger step (often fp32 sgd) under-tuned."""
    usable = {f: acc for f, acc in tried.items() if np.isfinite(acc)}
    if not usable:
        return None
    best = max(usable, key=usable.get)
    if best == max(tried):
        return 2 * best
    if best == min(tried):
        return best / 2
    return None


def measure(workdir, args, validation, model, setting):
    """For every algorithm: tune the learning rate on the validation split, then train the seeds
    with it. One job tunes all the algorithms, a second trains all their seeds. Returns the
    records and the first seed's run file of each algorithm."""
    defaults = {a: algorithms.get(a).default_lr for a in args.algorithms}
    tried = {a: {} for a in args.algorithms}
    grid = [(a, f) for a in args.algorithms for f in args.lr_factors]
    for round_ in range(1 + args.grid_extensions):
        tuned = train_all(workdir, args, [planned_run(workdir, args, validation, a, model, setting, defaults[a] * f,
                                                      0, "tune") for a, f in grid],
                          f"tune-{model}-{setting}" + (f"-more{round_}" if round_ else ""))
        for (a, f), run in zip(grid, tuned):
            tried[a][f] = run.get("accuracy", float("nan"))  # on the validation rows
        grid = [(a, f) for a in args.algorithms for f in [beyond_the_edge(tried[a])] if f is not None]
        if not grid:
            break
    records, chosen = {}, {}
    for a in args.algorithms:
        records[a] = {"algorithm": a, "model": model, "setting": setting, "grid_end": "", "skipped": "",
                      "validation": " ".join(f"{f:g}:{tried[a][f]:.3f}" for f in sorted(tried[a]))}
        usable = {f: acc for f, acc in tried[a].items() if np.isfinite(acc)}
        if not usable:
            records[a]["error"] = "every learning rate of the grid failed"
            continue
        factor = max(usable, key=usable.get)
        chosen[a] = defaults[a] * factor
        records[a].update(lr=chosen[a], lr_factor=factor,
                          grid_end="yes" if beyond_the_edge(tried[a]) is not None else "no")
    used, refused = train_seeds(workdir, args, chosen, model, setting)
    for a in chosen:
        records[a]["skipped"] = "; ".join(f"seed {s}: {why}" for s, why in refused[a])
        failed = [f"seed {s}: {run['error']}" for s, _, run in used[a] if "error" in run]
        if failed:
            records[a]["error"] = failed[0]
            continue
        if not used[a]:
            records[a]["error"] = "every seed was refused"
            continue
        runs = [run for _, _, run in used[a]]
        accuracy = np.array([r["accuracy"] for r in runs])
        records[a].update(accuracy=float(accuracy.mean()), seeds=len(runs),
                          accuracy_std=float(accuracy.std(ddof=1)) if len(runs) > 1 else 0.0,
                          bytes_up=runs[0]["bytes_up"], bytes_down=runs[0]["bytes_down"],
                          wall_s=float(np.mean([r["wall_s"] for r in runs])), error="")
    files = {a: [out for _, out, run in used[a] if "error" not in run] for a in chosen}
    return [records[a] for a in args.algorithms], [files[a][0] for a in chosen if files[a]]  # a curve an algorithm


def train_seeds(workdir, args, chosen, model, setting):
    """--seeds runs of each algorithm of `chosen` ({name: learning rate}) on the whole training set,
    seeds 0, 1, ...; a seed whose data split train refuses (a Dirichlet shard below the batch: exit
    2 before any step, the same split for every algorithm) gives no outcome and is replaced by the
    next seed number, up to --seeds replacements. Returns {name: [(seed, run file, its results),
    ...]} of the seeds that ran (or failed) and {name: [(seed, why), ...]} of those refused."""
    tried = {a: list(range(args.seeds)) for a in chosen}
    results = {}
    todo = [(a, s) for a in chosen for s in tried[a]]
    round_ = 0
    while todo:  # each round adds a seed or ends; seeds stay below 2 * --seeds
        planned = [planned_run(workdir, args, args.dataset, a, model, setting, chosen[a], s, "final") for a, s in todo]
        finals = train_all(workdir, args, planned, f"final-{model}-{setting}" + (f"-more{round_}" if round_ else ""))
        results.update(zip(todo, ((out, run) for (out, _), run in zip(planned, finals))))
        round_ += 1
        todo = []
        for a in chosen:
            short = args.seeds - sum(not results[a, s][1].get("refused") for s in tried[a])
            first = tried[a][-1] + 1
            extra = list(range(first, min(first + short, 2 * args.seeds)))
            tried[a] += extra
            todo += [(a, s) for s in extra]
    used = {a: [(s, *results[a, s]) for s in tried[a] if not results[a, s][1].get("refused")] for a in chosen}
    refused = {a: [(s, results[a, s][1]["error"]) for s in tried[a] if results[a, s][1].get("refused")]
               for a in chosen}
    return used, refused


def compare_with_sgd(records):
    for r in records:
        ref = next((s for s in records if s["algorithm"] == "sgd" and s["model"] == r["model"]
                    and s["setting"] == r["setting"] and "accuracy" in s), None)
        if ref and "accuracy" in r:
            r["acc_gap_pp"] = 100 * (ref["accuracy"] - r["accuracy"])
            r["fewer_bytes_up"] = ref["bytes_up"] / r["bytes_up"]
            r["fewer_bytes_down"] = ref["bytes_down"] / r["bytes_down"]


def plot_table(records, args, out):
    """<out>-accuracy-bytes.png: test accuracy (mean and std over the seeds) against bytes sent up
    per worker, a panel per model and data split, a point per algorithm; the dashed line is fp32
    sgd less 1.5 pp, the accuracy a compressed algorithm has to keep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(args.models), len(args.settings), squeeze=False,
                             figsize=(6 * len(args.settings), 4.5 * len(args.models)))
    for row, model in enumerate(args.models):
        for col, setting in enumerate(args.settings):
            ax = axes[row][col]
            done = [r for r in records if r["model"] == model and r["setting"] == setting and "accuracy" in r]
            for r in done:  # an algorithm keeps its colour in every panel
                ax.errorbar(r["bytes_up"] / 1e6, r["accuracy"], yerr=r["accuracy_std"], fmt="o", capsize=3,
                            color=f"C{args.algorithms.index(r['algorithm']) % 10}")
                ax.annotate(r["algorithm"], (r["bytes_up"] / 1e6, r["accuracy"]), fontsize=8,
                            textcoords="offset points", xytext=(4, 4))
            failed = [r["algorithm"] for r in records if r["model"] == model and r["setting"] == setting
                      and "accuracy" not in r]
            if failed:
                ax.text(0.01, 0.01, f"no result (see the table): {', '.join(failed)}", transform=ax.transAxes,
                        fontsize=8)
            sgd = next((r for r in done if r["algorithm"] == "sgd"), None)
            if sgd:
                ax.axhline(sgd["accuracy"] - 0.015, color="k", linestyle="--", linewidth=1, label="fp32 sgd - 1.5 pp")
                ax.legend(fontsize=8, loc="lower right")
            ax.set_xscale("log")  # one bit a coordinate against 32: the points span decades
            ax.margins(x=0.15)  # room for the labels
            ax.set_title(f"{model}, {setting}", fontsize=10)
            ax.set_xlabel("sent up per worker, whole run [MB]")
            ax.set_ylabel("test accuracy [fraction]")
            ax.grid(alpha=0.3)
    flags = f", train flags {' '.join(args.train_flags)}" if args.train_flags else ""
    fig.suptitle(f"{args.dataset}, {args.workers} workers and a server, {args.epochs:g} epochs{flags}\nlearning rate "
                 f"tuned on held-out training rows; mean and std over {args.seeds} seeds that ran", fontsize=10)
    fig.tight_layout()
    path = f"{out}-accuracy-bytes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parser():
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=flag_type(INT, bounds=(1, 1023)), default=8)
    p.add_argument("--epochs", type=flag_type(FLOAT, bounds=(0, 1e6), ends="(]"), default=30)
    p.add_argument("--dataset", default="mnist1d", choices=data.DATASETS)
    p.add_argument("--models", nargs="+", default=["mlp", "cnn1d"], choices=models.MODELS)
    p.add_argument("--algorithms", nargs="+", default=algorithms.names(), choices=algorithms.names())
    p.add_argument("--settings", nargs="+", default=["iid", "dirichlet"], choices=list(SETTINGS))
    p.add_argument("--lr-factors", type=flag_type(FLOAT, bounds=(0, 1e4), ends="(]"), nargs="+",
                   default=list(LR_FACTORS), help="the grid: these times each algorithm's default learning rate")
    p.add_argument("--grid-extensions", type=flag_type(INT, bounds=(0, 10)), default=4,
                   help="times the grid may grow by a factor of 2 past an end where an algorithm's best "
                   "validation accuracy lies")
    p.add_argument("--validation-fraction", type=flag_type(FLOAT, bounds=(0, 0.9), ends="(]"), default=0.2,
                   help="share of the training set held out to choose the learning rate")
    p.add_argument("--seeds", type=flag_type(INT, bounds=(1, 100)), default=3)
    p.add_argument("--train-flags", type=train_flags, default=[],
                   help="fobsgd_mpi.train flags every run gets, as one string after =, e.g. --train-flags=\"--worker-"
                   "scale drive --server-scale drive\" (a variant measured on the same terms; the record's meta keeps "
                   "them)")
    p.add_argument("--out", type=out_file, help="the HDF5 file to write (PNGs beside it); default results/convergence-<time>.h5")
    p.add_argument("--workdir", help="keep every run's file here; the runs it already holds complete are not run "
                   "again (to continue a protocol that was cut short)")
    p.add_argument("--quick", action="store_true",
                   help="2 workers, 1 epoch, mlp, iid, factors 0.5 and 1 (not extended), 2 seeds (a smoke run)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.quick:
        args.workers, args.epochs, args.models, args.settings = 2, 1, ["mlp"], ["iid"]
        args.lr_factors, args.seeds, args.grid_extensions = [0.5, 1.0], 2, 0
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        workdir = args.workdir
    else:
        workdir = tempfile.mkdtemp(prefix="convergence-", dir="results" if os.path.isdir("results") else None)
    validation = write_validation_split(args.dataset, args.validation_fraction,
                                        os.path.join(workdir, "validation.npz"))
    records, curves = [], {}
    for model in args.models:
        for setting in args.settings:
            measured, runs = measure(workdir, args, validation, model, setting)
            records += measured
            curves[model, setting] = runs
            for record in measured:
                print(f"# {model} {setting} {record['algorithm']}: {record}", flush=True)
    compare_with_sgd(records)
    print(f"# {args.dataset}, {args.workers} workers + server, {args.epochs} epochs; learning rate chosen on "
          f"{args.validation_fraction:g} of the training set held out; test accuracy over {args.seeds} seeds (a seed "
          "whose data split cannot be trained replaced by the next: seeds refused)")
    print(format_table(records, [("model", "model", "{}"), ("setting", "data", "{}"),
                                 ("algorithm", "algorithm", "{}"), ("lr", "lr", "{:g}"),
                                 ("grid_end", "best at grid end", "{}"),
                                 ("accuracy", "test acc", "{:.4f}"), ("accuracy_std", "+-std", "{:.4f}"),
                                 ("seeds", "seeds", "{:.0f}"),
                                 ("acc_gap_pp", "behind sgd [pp]", "{:.2f}"),
                                 ("bytes_up", "up/worker [B]", "{:.3e}"), ("fewer_bytes_up", "sgd/this up [x]", "{:.1f}"),
                                 ("fewer_bytes_down", "sgd/this down [x]", "{:.1f}"), ("wall_s", "wall [s]", "{:.1f}"),
                                 ("error", "error", "{}"), ("skipped", "seeds refused", "{}")]))
    path = results_path("convergence", args.out)
    text = ("validation", "error", "skipped")
    save_records(path, "convergence", [{k: (str(v) if k in text else v) for k, v in r.items()}
                                       for r in records],
                 {"bytes_up": "bytes per worker, whole run", "bytes_down": "bytes per worker, whole run",
                  "wall_s": "s, mean over seeds", "acc_gap_pp": "percentage points",
                  "accuracy": "fraction, mean over seeds", "accuracy_std": "fraction, sample std over seeds"},
                 meta=vars(args))
    stem = os.path.splitext(path)[0]
    plot_table(records, args, stem)
    for (model, setting), runs in curves.items():
        if runs:
            report.plot([report.load(f) for f in runs], f"{stem}-{model}-{setting}")
    print(f"# wrote {path} and its PNGs; runs in {workdir}")


if __name__ == "__main__":
    main()
