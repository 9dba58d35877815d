"""Images per second on real models against link speed, in the manner of Horovod's synthetic benchmark.

Every point is a short training job on random images (`--dataset synthetic-images`, --image-size
pixels a side, 10 classes) of one model (`--model torchvision:resnet18` ...), run through
`python -m fobsgd_mpi.launch` over tbf-shaped per-node links (root needed), unshaped (bandwidth
"none": the same namespaces, no qdisc), or with --model-network plainly, the alpha-beta model
recorded beside. Harness algorithms run with --workers workers and one server rank; the torch
DDP peers (ddp-none: fp32, ddp-fp16, ddp-powersgd: rank 1 from step 2) run with --workers ranks,
since DDP has no server rank. Both train the same model on the same shards with the same batch
per worker.

From each run's HDF5 file: the steady median step (benchmarking.steady_step_s, start-up steps
left out), images/s per worker (batch / step) and in total (x workers), the median encode +
decode time and its share of the step (NaN for DDP: its hooks run inside the all-reduce, which
compute_s also holds), and two ratios: each point's images/s over the same method unshaped, and
over DDP fp32 on the same link. Prints one table and writes results/synthetic_throughput-*.h5 (or
--out) and a PNG of total images/s against the shaped link speeds, a line per model and method.

    python benchmarks/synthetic_throughput.py --quick      # CI-sized: an MLP on 8x8 images, 2 workers
    python benchmarks/synthetic_throughput.py              # ResNet-18 and -50, everything (hours on 2 cores)
    python benchmarks/synthetic_throughput.py --device cuda --models torchvision:resnet50 --image-size 224 \
        --train-flags="--downlink feedback"                # GPU workers; DDP over NCCL; harness flags

--device puts every rank's model, data and codec there (harness and DDP alike); --train-flags adds
fobsgd_mpi.train flags to the harness runs (not those the benchmark sets itself).
"""
import argparse
import os
import sys
import tempfile

import h5py

from fobsgd_mpi import algorithms, device, jobs, models
from fobsgd_mpi.benchmarking import (STARTUP_ITERATIONS, format_table, line_plot, link_text, out_file, rate_of,
                                     results_path, run_grid, save_records, steady_median, steady_step_s,
                                     train_flags_type)
from fobsgd_mpi.config import BIG, INT, STR, ScriptParser, flag_type
from fobsgd_mpi.errors import UsageError

PEERS = {"ddp-none": ["--hook", "none"], "ddp-fp16": ["--hook", "fp16"],
         "ddp-powersgd": ["--hook", "powersgd", "--powersgd-start", "2"]}
FP32_PEER = "ddp-none"


# train flags job() sets, which --train-flags may not
JOB_FLAGS = ("--dataset", "--image-size", "--model", "--batch-size", "--steps", "--eval-every", "--quiet", "--out",
             "--device", "--algorithm", "--check-every", "--config")


def job(method, model, args, out):
    """The launcher's arguments after `--` for one run, and its number of ranks."""
    common = ["--dataset", "synthetic-images", "--image-size", args.image_size, "--model", model,
              "--batch-size", args.batch_size, "--steps", args.steps, "--eval-every", args.steps, "--quiet",
              "--out", out, "--device", args.device]
    if method in PEERS:
        return [sys.executable, "-m", "fobsgd_mpi.ddp", *PEERS[method], *common], args.workers
    return ["--algorithm", method, "--check-every", "0", *common, *args.train_flags], args.workers + 1


def run_point(workdir, method, model, bandwidth, args):
    out = os.path.join(workdir, f"{method}-{model.replace(':', '_')}-{bandwidth}.h5")
    cmd, ranks = job(method, model, args, out)
    launch = ["-n", ranks] + (["--bandwidth", bandwidth] if bandwidth != "none" else [])
    if args.model_network and bandwidth != "none":
        launch.append("--model-network")
    # a rendezvous port of its own: an unshaped DDP job shares this machine's loopback with other jobs
    done = jobs.launch(*launch, "--", *cmd, timeout=args.timeout, env={"MASTER_PORT": str(jobs.free_port())})
    point = {"model": model, "algorithm": method, "bandwidth": bandwidth, "workers": args.workers, "ranks": ranks}
    if done.returncode or not os.path.exists(out):
        return {**point, "error": jobs.error_line(done.stderr)}
    with h5py.File(out) as f:
        it = f["iterations"]
        step_s = steady_step_s(it["wall_s"][:])
        codec_s = steady_median(it["encode_s"][:] + it["decode_s"][:])
        return {**point, "d": int(f.attrs["d"]), "step_ms": 1e3 * step_s, "images_per_s_worker": args.batch_size / step_s,
                "images_per_s": args.workers * args.batch_size / step_s,
                "compute_ms": 1e3 * steady_median(it["compute_s"][:]), "codec_ms": 1e3 * codec_s,
                "codec_share": codec_s / step_s, "error": ""}


def add_ratios(records):
    """Each record's images/s over its method's unshaped run and over DDP fp32 on its link (None
    where that run is missing or failed)."""
    rate = {(r["model"], r["algorithm"], r["bandwidth"]): r["images_per_s"] for r in records if not r["error"]}
    for r in records:
        if not r["error"]:
            unshaped = rate.get((r["model"], r["algorithm"], "none"))
            fp32 = rate.get((r["model"], FP32_PEER, r["bandwidth"]))
            r["of_unshaped"] = r["images_per_s"] / unshaped if unshaped else None
            r["over_ddp_fp32"] = r["images_per_s"] / fp32 if fp32 else None


def plot(records, path, args):
    """Total images/s against the shaped link speeds, a line per model and method; None when no
    shaped point ran."""
    shaped = sorted((r for r in records if not r["error"] and r["bandwidth"] != "none"),
                    key=lambda r: rate_of(r["bandwidth"]))
    if not shaped:
        return None
    series = {}
    for r in shaped:
        xs, ys = series.setdefault(f"{r['model']} {r['algorithm']}", ([], []))
        xs.append(rate_of(r["bandwidth"]) / 1e6)
        ys.append(r["images_per_s"])
    line_plot(series, path, "link bandwidth [Mbit/s]", "throughput, all workers [images/s]",
              f"synthetic {args.image_size}x{args.image_size} images, batch {args.batch_size} per worker, "
              f"{args.workers} workers on {args.device}, per-node links")
    return path


COLUMNS = [("model", "model", "{}"), ("algorithm", "method", "{}"), ("bandwidth", "link", "{}"),
           ("ranks", "ranks", "{}"), ("d", "d", "{:,}"), ("step_ms", "step [ms]", "{:.0f}"),
           ("images_per_s_worker", "per worker [images/s]", "{:.1f}"), ("images_per_s", "total [images/s]", "{:.1f}"),
           ("compute_ms", "compute [ms]", "{:.0f}"), ("codec_ms", "encode+decode [ms]", "{:.1f}"),
           ("codec_share", "encode+decode share [%]", "{:.1%}"), ("of_unshaped", "of unshaped [x]", "{:.2f}"),
           ("over_ddp_fp32", "over ddp fp32 [x]", "{:.2f}"), ("error", "error", "{}")]
UNITS = {"step_ms": "ms, steady median", "images_per_s_worker": "images/s per worker",
         "images_per_s": "images/s, all workers", "compute_ms": "ms, steady median (DDP: with the all-reduce)",
         "codec_ms": "ms, steady median of encode + decode (slowest rank each)",
         "codec_share": "fraction of the step", "of_unshaped": "x the same method's unshaped images/s",
         "over_ddp_fp32": "x DDP fp32's images/s on the same link"}


def parser():
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", type=flag_type(STR, rule=models.check_name),
                   default=["torchvision:resnet18", "torchvision:resnet50"],
                   help="any --model of fobsgd_mpi.train")
    p.add_argument("--algorithms", nargs="+", default=[*algorithms.names(), *PEERS],
                   choices=[*algorithms.names(), *PEERS], help="harness algorithms and DDP peers")
    p.add_argument("--bandwidths", nargs="+", type=link_text, default=["none", "100mbit", "1gbit", "10gbit"])
    p.add_argument("--workers", type=flag_type(INT, bounds=(1, 1024)), default=4,
                   help="computing ranks: the harness adds a server rank, DDP has none")
    p.add_argument("--batch-size", type=flag_type(INT, bounds=(1, 2**16)), default=32, help="per worker")
    p.add_argument("--image-size", type=flag_type(INT, bounds=(8, 4096)), default=32,
                   help="pixels a side (32 as the CIFAR recipes, 224 as ImageNet's)")
    p.add_argument("--steps", type=flag_type(INT, bounds=(STARTUP_ITERATIONS + 2, BIG)), default=12,
                   help="per run; the first ones are start-up and left out of the medians")
    p.add_argument("--device", type=flag_type(STR, rule=device.device_rule), default="cpu",
                   help="where every rank computes, harness and DDP alike: cpu, cuda (GPU = node-local rank mod the "
                        "node's GPUs; DDP then all-reduces over NCCL) or cuda:N")
    p.add_argument("--train-flags", type=train_flags_type(JOB_FLAGS, "the benchmark"), default=[],
                   help="more fobsgd_mpi.train flags for the harness runs, in one quoted string "
                        "(e.g. --train-flags='--downlink feedback --block-size 4096'); the DDP peers take none")
    p.add_argument("--model-network", action="store_true", help="no shaping: the alpha-beta model beside unshaped runs")
    p.add_argument("--timeout", type=flag_type(INT, bounds=(1, 10**7)), default=3600, help="seconds per run")
    p.add_argument("--quick", action="store_true",
                   help="CI-sized: the mlp on 8x8 images, fo-sgd, sgd and ddp-none, none and 100mbit, 2 workers")
    p.add_argument("--out", type=out_file, help="the HDF5 file to write (its PNG beside it); default "
                                 "results/synthetic_throughput-<time>.h5")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.algorithms, args.bandwidths, args.workers, args.image_size, args.batch_size, args.steps = (
            ["mlp"], ["fo-sgd", "sgd", "ddp-none"], ["none", "100mbit"], 2, 8, 8, 5)
    try:
        device.select(args.device)  # a GPU asked for that this node lacks: one line before any run
    except UsageError as exc:
        p.error(str(exc))
    workdir = tempfile.mkdtemp(prefix="synthetic-throughput-")
    records = run_grid(lambda model, bandwidth, method: run_point(workdir, method, model, bandwidth, args),
                       args.models, args.bandwidths, args.algorithms)
    add_ratios(records)
    print(f"# synthetic {args.image_size}x{args.image_size} images, batch {args.batch_size} per worker, "
          f"{args.workers} workers on {args.device}, per-node links"
          f"{' (alpha-beta model only)' if args.model_network else ''}; "
          f"median over steps {STARTUP_ITERATIONS}..{args.steps - 1}")
    print(format_table(records, COLUMNS))
    path = results_path("synthetic_throughput", args.out)
    save_records(path, "synthetic_throughput", records, UNITS, meta=vars(args))
    png = plot(records, os.path.splitext(path)[0] + "-throughput.png", args)
    print(f"# wrote {', '.join(filter(None, [path, png]))}; runs in {workdir}")


if __name__ == "__main__":
    main()
