"""Server time per iteration against the number of workers n and the model size d.

Runs short FO-SGD (and fp32 sgd) jobs with 1..64 workers on this machine (oversubscribed: the
ranks share the cores, so only the server's own phases are meaningful here) and reads the
server's aggregate + re-quantize time (`server_s`) and the per-iteration wall-clock from each
run's HDF5 file. Prints a table with the server time per worker payload, so the growth with n
and where the server becomes the bottleneck can be read off; writes results/server_scaling-*.h5
and a PNG.

    python benchmarks/server_scaling.py [--workers 1 2 4 8 16 32 63] [--widths 256 1024] [--steps 20]
"""
import argparse
import os
import tempfile

import h5py

from fobsgd_mpi import algorithms
from fobsgd_mpi.benchmarking import format_table, line_plot, results_path, save_records, steady_median, steady_step_s
from fobsgd_mpi.config import BIG, INT, ScriptParser, flag_type
from fobsgd_mpi.jobs import error_line, mpirun


def one(workdir, algorithm, workers, width, steps):
    out = os.path.join(workdir, f"{algorithm}-n{workers}-w{width}.h5")
    done = mpirun(workers + 1, "fobsgd_mpi.train", "--quiet", "--algorithm", algorithm, "--dataset",
                  "synthetic-logreg", "--model", "wide-mlp", "--width", width, "--steps", steps, "--batch-size", "4",
                  "--eval-every", steps, "--check-every", "0", "--out", out, timeout=1800)
    if done.returncode:
        raise SystemExit(f"error: {algorithm} with {workers} workers failed: {error_line(done.stderr)}")
    with h5py.File(out) as f:
        server = steady_median(f["iterations/server_s"][:])
        wall = steady_step_s(f["iterations/wall_s"][:])
        return {"algorithm": algorithm, "workers": workers, "d": int(f.attrs["d"]), "server_ms": 1e3 * server,
                "server_us_per_payload": 1e6 * server / workers, "iteration_ms": 1e3 * wall,
                "server_share": server / wall}


def main(argv=None):
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=flag_type(INT, bounds=(1, 1023)), nargs="+", default=[1, 2, 4, 8, 16, 32, 63])
    p.add_argument("--widths", type=flag_type(INT, bounds=(1, 2**20)), nargs="+", default=[256, 1024])
    p.add_argument("--algorithms", nargs="+", default=["fo-sgd", "sgd"], choices=algorithms.names())
    p.add_argument("--steps", type=flag_type(INT, bounds=(1, BIG)), default=20)
    args = p.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="server-scaling-")
    records = [one(workdir, a, n, w, args.steps) for w in args.widths for a in args.algorithms for n in args.workers]
    print("# median over iterations; ranks oversubscribed on this machine's cores")
    print(format_table(records, [("algorithm", "algorithm", "{}"), ("d", "d", "{:d}"), ("workers", "workers", "{:d}"),
                                 ("server_ms", "server [ms]", "{:.2f}"),
                                 ("server_us_per_payload", "server/payload [us]", "{:.1f}"),
                                 ("iteration_ms", "iteration [ms]", "{:.1f}"),
                                 ("server_share", "server/iteration", "{:.2f}")]))
    path = results_path("server_scaling")
    save_records(path, "server_scaling", records, {"server_ms": "ms", "server_us_per_payload": "us",
                                                   "iteration_ms": "ms", "server_share": "fraction"}, meta=vars(args))
    series = {}
    for a in args.algorithms:
        for d in sorted({r["d"] for r in records}):
            pts = [r for r in records if r["algorithm"] == a and r["d"] == d]
            series[f"{a}, d={d:,}"] = ([r["workers"] for r in pts], [r["server_ms"] for r in pts])
    line_plot(series, os.path.splitext(path)[0] + ".png", "workers [processes]", "server time per iteration [ms]",
              "synthetic-logreg, wide-mlp, unshaped, ranks sharing this machine's cores", base=2)
    print(f"# wrote {path} and .png")


if __name__ == "__main__":
    main()
