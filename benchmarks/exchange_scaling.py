"""Time of one exchange (uplink + server + downlink) against the number of ranks, alone.

On a machine with fewer cores than ranks a training step's time grows with n because the ranks
take turns on the cores for their compute, encode and decode, whatever the network does. This
benchmark leaves those out: every rank (each a worker, as with --server-also-works) encodes one
gradient once, then times only the algorithm's own exchange, started together after a barrier,
over real tbf-shaped per-node links (python -m fobsgd_mpi.launch, root needed). It reports the
slowest rank's median exchange time, the alpha-beta model's figure for it, and the ratio to the
smallest n: the part of "time per iteration within 1.5x from n = 2 to 16" that the sharded
server is responsible for. Prints a table; writes results/exchange_scaling-*.h5 (or --out) and a
PNG beside it.

    python benchmarks/exchange_scaling.py [--ranks 2 4 8 16] [--bandwidth 100mbit] [--d 1048576]
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

from fobsgd_mpi import algorithms, jobs
from fobsgd_mpi.config import INT, SERVERS, ScriptParser, _power_of_two, _servers_rule, flag_type
from fobsgd_mpi.benchmarking import format_table, line_plot, out_file, results_path, run_grid, save_records
from fobsgd_mpi.launch import parse_rate, rate_text, time_text
from fobsgd_mpi.netmodel import NetworkModel


def rank_program(args):
    """One job (one algorithm, one server count): time `args.reps` exchanges on every rank; rank
    0 writes the result to args.rank_out."""
    from fobsgd_mpi import algorithms, config
    from fobsgd_mpi.algorithms.options import AlgorithmOptions
    from fobsgd_mpi.transport import ParameterServer, mpi

    MPI = mpi()
    comm = MPI.COMM_WORLD
    (algorithm,), (servers,) = args.algorithms, args.servers
    cfg = config.parse_config(["--algorithm", algorithm, "--servers", servers, "--block-size", str(args.block_size)])
    ps = ParameterServer(comm, server_works=True)
    alg = algorithms.get(algorithm)(ps, args.d, AlgorithmOptions.from_config(cfg, stateful_optimizer=True))
    alg.encode_up(np.random.default_rng(ps.rank).standard_normal(args.d).astype(np.float32), 0)
    times = []
    for _ in range(args.warmup + args.reps):
        comm.Barrier()
        start = MPI.Wtime()
        rows = alg.uplink.run()
        if rows is not None:
            alg.server(rows, 0)
        alg.downlink.run()
        times.append(comm.allreduce(MPI.Wtime() - start, op=MPI.MAX))
    if ps.rank == 0:
        with open(args.rank_out, "w") as f:
            json.dump({"exchange_s": float(np.median(times[args.warmup:])), "bytes_up": alg.payload_bytes_up,
                       "bytes_down": alg.payload_bytes_down, "servers": alg.servers}, f)
    ps.close()


def run_point(workdir, algorithm, servers, ranks, args):
    out = os.path.join(workdir, f"{algorithm}-s{servers}-n{ranks}.json")
    done = jobs.launch("-n", ranks, "--bandwidth", args.bandwidth, "--latency", args.latency, "--",
                       sys.executable, os.path.abspath(__file__), "--rank-program", "--algorithms", algorithm,
                       "--servers", servers, "--d", args.d, "--block-size", args.block_size, "--reps", args.reps,
                       "--warmup", args.warmup, "--rank-out", out, timeout=1800)
    point = {"algorithm": algorithm, "servers": servers, "ranks": ranks}
    if done.returncode:
        return {**point, "error": jobs.error_line(done.stderr)}
    with open(out) as f:
        got = json.load(f)
    model = NetworkModel("per-node", parse_rate(args.bandwidth))
    modelled = model.exchange_seconds(got["bytes_up"], got["bytes_down"], ranks, ranks, got["servers"],
                                      server_sends=True)
    return {**point, "exchange_ms": 1e3 * got["exchange_s"], "modelled_ms": 1e3 * modelled,
            "bytes_up": got["bytes_up"], "bytes_down": got["bytes_down"], "error": ""}


def parser():
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", nargs="+", default=["fo-sgd", "sgd"], choices=algorithms.names())
    p.add_argument("--servers", nargs="+", default=["1", "all"], type=flag_type(SERVERS, rule=_servers_rule))
    p.add_argument("--ranks", type=flag_type(INT, bounds=(2, 1024)), nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--bandwidth", type=rate_text, default="100mbit")
    p.add_argument("--latency", type=time_text, default="50ms")
    p.add_argument("--d", type=flag_type(INT, bounds=(1, 2**31)), default=1 << 20)
    p.add_argument("--block-size", type=flag_type(INT, bounds=(64, 2**30), rule=_power_of_two), default=16384)
    p.add_argument("--reps", type=flag_type(INT, bounds=(1, 10**6)), default=20)
    p.add_argument("--warmup", type=flag_type(INT, bounds=(0, 10**6)), default=3)
    p.add_argument("--out", type=out_file, help="the HDF5 file to write (PNG beside it); default results/exchange_scaling-<time>.h5")
    p.add_argument("--rank-program", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rank-out", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.rank_program:
        return rank_program(args)
    workdir = tempfile.mkdtemp(prefix="exchange-scaling-")
    records = run_grid(lambda algorithm, servers, ranks: run_point(workdir, algorithm, servers, ranks, args),
                       args.algorithms, args.servers, args.ranks)
    for r in records:
        first = next((q for q in records if q["algorithm"] == r["algorithm"] and q["servers"] == r["servers"]
                      and not q["error"]), None)
        if not r["error"] and first:
            r["vs_fewest_ranks"] = r["exchange_ms"] / first["exchange_ms"]
    ok = [r for r in records if not r["error"]]
    print(f"# d = {args.d:,}, per-node {args.bandwidth} links, every rank a worker; slowest rank's median over "
          f"{args.reps} exchanges")
    print(format_table(records, [("algorithm", "algorithm", "{}"), ("servers", "servers", "{}"),
                                 ("ranks", "ranks", "{}"), ("exchange_ms", "exchange [ms]", "{:.1f}"),
                                 ("modelled_ms", "modelled [ms]", "{:.1f}"),
                                 ("vs_fewest_ranks", "vs fewest ranks", "{:.2f}x"),
                                 ("bytes_up", "up [B]", "{:,}"), ("bytes_down", "down [B]", "{:,}"),
                                 ("error", "error", "{}")]))
    path = results_path("exchange_scaling", args.out)
    save_records(path, "exchange_scaling", records, {"exchange_ms": "ms", "modelled_ms": "ms",
                                                     "bytes_up": "B per rank", "bytes_down": "B per rank"},
                 meta=vars(args))
    series = {}
    for r in ok:
        series.setdefault(f"{r['algorithm']} servers={r['servers']}", []).append((r["ranks"], r["exchange_ms"]))
    if series:
        line_plot({k: tuple(zip(*sorted(v))) for k, v in series.items()}, f"{os.path.splitext(path)[0]}.png",
                  "ranks [processes]", "exchange time [ms]", f"one exchange alone, every rank a worker, d = {args.d:,}, "
                  f"{args.bandwidth} per-node links", base=2)
    print(f"# wrote {path} and its PNG")
    return 1 if len(ok) < len(records) else 0


if __name__ == "__main__":
    sys.exit(main())
