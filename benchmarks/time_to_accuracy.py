"""Wall-clock to a target test accuracy over shaped per-node links, the harness against real peers.

MNIST-1D, an MLP of --width 1000 (d = 1.05M), R ranks that all compute (the harness with
--server-also-works, so its global batch is DDP's), the same shards, batch, seed, learning-rate
schedule and epochs. Harness algorithms run through `python -m fobsgd_mpi.launch -- <train
flags>` (fo-sgd@all: with --servers all), the peers are `python -m fobsgd_mpi.ddp` (torch DDP on gloo: no hook, the fp16 hook,
PowerSGD of rank 1 and 4). Every run stops at its first evaluation reaching --target. Prints a
table per bandwidth (time to target, steps, final accuracy, and the bytes the busiest interface
sent per step and, apart, at start-up: each run is run once more stopped after one step, see
benchmarking.link_traffic), writes results/time_to_accuracy-*.h5 (or --out) and, per bandwidth,
accuracy and loss against iterations, bytes and wall-clock (PNGs, the target as a dashed line).
Learning rates: each algorithm's default, or with --tuned the ones benchmarks/convergence.py chose
(for the mlp at its default width 256, on iid shards of 8 workers).

    python benchmarks/time_to_accuracy.py --quick          # 2 ranks, 100mbit, a few algorithms (CI-sized)
    python benchmarks/time_to_accuracy.py                  # 8 ranks, 100mbit and 1gbit, everything
"""
import argparse
import os
import sys
import tempfile

import h5py
import numpy as np

from fobsgd_mpi import algorithms, jobs, report
from fobsgd_mpi.config import BIG, FLOAT, INT, SEED_MAX, SERVERS, ScriptParser, _servers_rule, flag_type
from fobsgd_mpi.benchmarking import LINK_UNITS, format_table, link_traffic, out_file, results_path, save_records
from fobsgd_mpi.launch import link_bytes, rate_text

PEERS = {"ddp-fp32": ["--hook", "none"], "ddp-fp16": ["--hook", "fp16"],
         "ddp-powersgd-r1": ["--hook", "powersgd", "--powersgd-rank", "1"],
         "ddp-powersgd-r4": ["--hook", "powersgd", "--powersgd-rank", "4"]}


def harness_algorithm(text):
    """NAME or NAME@K (K server ranks), checked as fobsgd_mpi.train checks --algorithm and --servers."""
    algorithm, _, servers = text.partition("@")
    if algorithm not in algorithms.names():
        raise argparse.ArgumentTypeError(f"{algorithm!r} is not one of {', '.join(algorithms.names())}")
    if servers:
        flag_type(SERVERS, rule=_servers_rule)(servers)
    return text


def tuned_rates(path, model="mlp", setting="iid"):
    """{algorithm: learning rate} as benchmarks/convergence.py chose it on validation rows for
    `model` on `setting` shards (its table in `path`)."""
    try:
        with h5py.File(path, "r") as f:
            g = f["convergence"]
            rows = zip(*(g[k].asstr()[:] if g[k].dtype.kind in "OS" else g[k][:]
                         for k in ("algorithm", "model", "setting", "lr")))
            return {a: float(lr) for a, m, s, lr in rows if m == model and s == setting and np.isfinite(lr)}
    except (OSError, KeyError) as exc:
        raise argparse.ArgumentTypeError(f"{path} is not a table of benchmarks/convergence.py ({exc})") from None


def run(workdir, name, bandwidth, args):
    out = os.path.join(workdir, f"{name}-{bandwidth}.h5")
    common = ["--dataset", "mnist1d", "--model", "mlp", "--width", args.width, "--epochs", args.epochs,
              "--eval-every", args.eval_every, "--target-accuracy", args.target, "--seed", args.seed, "--quiet"]
    if name in PEERS:
        lr = args.tuned.get("sgd", args.peer_lr)
        job = [sys.executable, "-m", "fobsgd_mpi.ddp", *PEERS[name], "--lr", lr, *common]
    else:
        algorithm, _, servers = name.partition("@")
        lr = args.tuned.get(algorithm, algorithms.get(algorithm).default_lr)
        job = ["--algorithm", algorithm, "--servers", servers or "1", "--server-also-works", "--check-every", "0",
               "--lr", lr, *common]
    launch = ["-n", args.ranks, "--bandwidth", bandwidth, "--"]
    done = jobs.launch(*launch, *job, "--out", out, timeout=args.timeout)
    rec = {"name": name, "bandwidth": bandwidth, "ranks": args.ranks, "target": args.target, "lr": lr}
    if done.returncode or not os.path.exists(out):
        return {**rec, "error": jobs.error_line(done.stderr)}, None
    with h5py.File(out) as f:
        acc, wall, steps = f["evals/test_accuracy"][:], f["evals/wall_s"][:], f["evals/step"][:]
        hit = np.flatnonzero(acc >= args.target)
        rec.update({"d": int(f.attrs["d"]), "time_to_target_s": float(wall[hit[0]]) if hit.size else None,
                    "steps_to_target": int(steps[hit[0]]) + 1 if hit.size else None,
                    "final_accuracy": float(acc[-1]), "wall_s": float(wall[-1]),
                    "step_ms": 1e3 * float(np.median(np.diff(f["iterations/wall_s"][1:]))), "error": ""})
        ran = len(f["iterations/step"])
    links = link_bytes(done.stdout)
    if links and ran > 1:  # the counters cover the whole run: a one-step run tells start-up from steps
        one = jobs.launch(*launch, *job, "--steps", "1", "--out", out[:-3] + "-1step.h5", timeout=args.timeout)
        if one.returncode:
            return {**rec, "error": "one-step run: " + jobs.error_line(one.stderr)}, out
        rec.update(link_traffic(links, link_bytes(one.stdout), ran))
    return rec, out


def parser():
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bandwidths", nargs="+", type=rate_text, default=["100mbit", "1gbit"])
    p.add_argument("--algorithms", nargs="*", type=harness_algorithm,
                   default=["fo-sgd", "fo-sgd@all", "liec-sgd", "sgd", "signsgd-mv", "ef-sgd"],
                   help="harness algorithms; NAME@K runs NAME with --servers K")
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    p.add_argument("--ranks", type=flag_type(INT, bounds=(2, 1024)), default=8)
    p.add_argument("--width", type=flag_type(INT, bounds=(1, 2**20)), default=1000,
                   help="mlp width: 1000 gives d = 1.05M")
    p.add_argument("--epochs", type=flag_type(FLOAT, bounds=(0, 1e6), ends="(]"), default=20)
    p.add_argument("--target", type=flag_type(FLOAT, bounds=(0, 1), ends="(]"), default=0.5,
                   help="test accuracy to reach")
    p.add_argument("--eval-every", type=flag_type(INT, bounds=(1, BIG)), default=10)
    p.add_argument("--peer-lr", type=flag_type(FLOAT, bounds=(0, 1e4), ends="(]"), default=0.05,
                   help="DDP's learning rate (the harness's sgd default)")
    p.add_argument("--tuned", type=tuned_rates, default={},
                   help="a table of benchmarks/convergence.py: each harness algorithm trains at the learning rate "
                   "it chose for mlp on iid shards, and the DDP peers at sgd's (else the algorithms' defaults "
                   "and --peer-lr)")
    p.add_argument("--seed", type=flag_type(INT, bounds=(0, SEED_MAX)), default=0)
    p.add_argument("--timeout", type=flag_type(INT, bounds=(1, 10**7)), default=3600, help="seconds per run")
    p.add_argument("--quick", action="store_true", help="2 ranks, 100mbit, width 256, fo-sgd, sgd and ddp-fp32")
    p.add_argument("--out", type=out_file, help="the HDF5 file to write (PNGs beside it); default results/time_to_accuracy-<time>.h5")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.quick:
        args.bandwidths, args.algorithms, args.peers, args.ranks, args.width, args.epochs, args.target = (
            ["100mbit"], ["fo-sgd", "sgd"], ["ddp-fp32"], 2, 256, 2, 0.3)
    workdir = tempfile.mkdtemp(prefix="time-to-accuracy-")
    records, files = [], {}
    for bandwidth in args.bandwidths:
        for name in [*args.algorithms, *args.peers]:
            rec, out = run(workdir, name, bandwidth, args)
            records.append(rec)
            if out:
                files.setdefault(bandwidth, []).append((name, out))
            print(f"# {rec}", flush=True)
    print(f"# MNIST-1D mlp width {args.width}, {args.ranks} ranks all computing, per-node links, target test "
          f"accuracy {args.target}, at most {args.epochs} epochs; '-' = target not reached")
    print(format_table(records, [("bandwidth", "link", "{}"), ("name", "method", "{}"), ("d", "d", "{:,}"),
                                 ("time_to_target_s", "time to target [s]", "{:.1f}"),
                                 ("lr", "lr", "{:g}"), ("steps_to_target", "steps", "{}"),
                                 ("step_ms", "step [ms]", "{:.1f}"),
                                 ("final_accuracy", "last acc", "{:.3f}"),
                                 ("node_tx_per_step", "busiest tx/step [B]", "{:,.0f}"),
                                 ("node_tx_startup", "busiest tx start-up [B]", "{:,.0f}"),
                                 ("error", "error", "{}")]))
    path = results_path("time_to_accuracy", args.out)
    save_records(path, "time_to_accuracy", records, {"time_to_target_s": "s", "wall_s": "s", "step_ms": "ms",
                                                      "final_accuracy": "fraction", **LINK_UNITS}, meta=vars(args))
    for bandwidth, runs in files.items():
        report.plot([dict(report.load(out), algorithm=name) for name, out in runs],
                    f"{os.path.splitext(path)[0]}-{bandwidth}")
    print(f"# wrote {path} and its PNGs; runs in {workdir}")


if __name__ == "__main__":
    main()
