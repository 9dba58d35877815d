"""Throughput against link speed: algorithms x bandwidths x model sizes x ranks x server counts.

Every point is a short training job (synthetic-logreg data, a wide MLP whose --width sets d) run
through `python -m fobsgd_mpi.launch`, over real tbf-shaped per-node links (root needed), or
unshaped (bandwidth "none"), or with --model-network only the alpha-beta model beside an
unshaped run. From each run's HDF5 file: iterations per second (median step), the median time
of each phase, bytes each way per worker, and the modelled exchange time. Over shaped links also
the busiest interface's bytes per training step and, apart, at start-up (MPI connections, the
data shards, the first step): the launcher counts a whole run, so each point runs once more
stopped after one step, and the difference is what the later steps moved. Prints one table and
writes results/bandwidth_sweep-*.h5 (or --out) with up to three PNGs: throughput against
bandwidth (one line per algorithm), speed-up over fp32 sgd with as many servers, and time per
iteration against n.

    python benchmarks/bandwidth_sweep.py --quick                      # CI-sized: 2 algorithms, 100mbit + none
    python benchmarks/bandwidth_sweep.py --bandwidths 10mbit 100mbit 1gbit 10gbit none \\
        --widths 256 1024 2048 --ranks 3 5 9 17 --servers 1 all        # the full sweep (hours)
"""
import argparse
import os
import tempfile

import h5py

from fobsgd_mpi import algorithms, jobs
from fobsgd_mpi.config import BIG, INT, SERVERS, ScriptParser, _servers_rule, flag_type
from fobsgd_mpi.benchmarking import (LINK_UNITS, STARTUP_ITERATIONS, format_table, line_plot, link_text, link_traffic,
                                     out_file, rate_of, results_path, run_grid, save_records, steady_median,
                                     steady_step_s)
from fobsgd_mpi.launch import link_bytes

PHASES = ("compute", "encode", "comm", "server", "decode")


def run_point(workdir, algorithm, bandwidth, width, ranks, servers, steps, model_network):
    out = os.path.join(workdir, f"{algorithm}-{bandwidth}-w{width}-n{ranks}-s{servers}.h5")
    train = ["--algorithm", algorithm, "--dataset", "synthetic-logreg", "--model", "wide-mlp", "--width", width,
             "--steps", steps, "--batch-size", "8", "--eval-every", steps, "--check-every", "0", "--quiet",
             "--servers", servers, "--block-size", "16384", "--out", out]
    launch = ["-n", ranks] + (["--bandwidth", bandwidth] if bandwidth != "none" else [])
    if model_network and bandwidth != "none":
        launch.append("--model-network")
    done = jobs.launch(*launch, "--", *train, timeout=3600)
    point = {"algorithm": algorithm, "bandwidth": bandwidth, "servers": str(servers), "ranks": ranks}
    if done.returncode:
        return {**point, "error": jobs.error_line(done.stderr)}
    links = link_bytes(done.stdout)
    if links:  # the counters cover the whole run: a one-step run of the same job tells start-up from steps
        one = jobs.launch(*launch, "--", *train, "--steps", "1", "--out", out[:-3] + "-1step.h5", timeout=3600)
        if one.returncode:
            return {**point, "error": "one-step run: " + jobs.error_line(one.stderr)}
        point.update(link_traffic(links, link_bytes(one.stdout), steps))
    with h5py.File(out) as f:
        it = f["iterations"]
        step_s = steady_step_s(it["wall_s"][:])
        rec = {**point, "d": int(f.attrs["d"]), "it_per_s": 1.0 / step_s, "step_ms": 1e3 * step_s,
               "bytes_up": int(it["bytes_up"][-1]), "bytes_down": int(it["bytes_down"][-1]),
               "modelled_comm_ms": 1e3 * steady_median(it["modelled_comm_s"][:]), "error": ""}
        rec.update({f"{p}_ms": 1e3 * steady_median(it[f"{p}_s"][:]) for p in PHASES})
    return rec


def plots(records, stem):
    """<stem>-throughput.png and -speedup.png against the link speed (the largest d and n swept;
    with two link speeds or more), -scaling.png against n (the largest d; with two ranks counts or
    more). Returns the paths written."""
    ok = [r for r in records if not r["error"]]
    if not ok:
        return []
    d, n = max(r["d"] for r in ok), max(r["ranks"] for r in ok)  # the largest model, the most ranks swept
    what = f"synthetic-logreg, wide-mlp, d = {d:,}"
    shaped = sorted({r["bandwidth"] for r in ok if r["bandwidth"] != "none"}, key=rate_of)
    by_bw = {}  # (algorithm, servers) -> {bandwidth: it/s}
    for r in sorted(ok, key=lambda r: rate_of(r["bandwidth"])):
        if r["d"] == d and r["ranks"] == n and r["bandwidth"] in shaped:
            by_bw.setdefault((r["algorithm"], r["servers"]), {})[r["bandwidth"]] = r["it_per_s"]
    written = []
    if len(shaped) > 1:
        written.append(f"{stem}-throughput.png")
        line_plot({f"{a} servers={k}": ([rate_of(b) / 1e6 for b in v], list(v.values()))
                   for (a, k), v in by_bw.items()}, written[-1], "link bandwidth [Mbit/s]",
                  "throughput [iterations/s]", f"{what}, n = {n} ranks, per-node links")
    # like with like: each algorithm over fp32 sgd with as many servers
    speedup = {f"{a} servers={k}": ([rate_of(b) / 1e6 for b in v if b in fp32],
                                    [v[b] / fp32[b] for b in v if b in fp32])
               for (a, k), v in by_bw.items() if (fp32 := by_bw.get(("sgd", k)))}
    if len(shaped) > 1 and speedup:
        written.append(f"{stem}-speedup.png")
        line_plot(speedup, written[-1], "link bandwidth [Mbit/s]", "speed-up over fp32 sgd, as many servers [x]",
                  f"{what}, n = {n} ranks, per-node links")
    by_n = {}
    for r in ok:
        if r["d"] == d:
            by_n.setdefault(f"{r['algorithm']} servers={r['servers']} {r['bandwidth']}", []).append((r["ranks"],
                                                                                                  r["step_ms"]))
    if len({r["ranks"] for r in ok}) > 1:
        links = ", ".join(sorted({r["bandwidth"] for r in ok}, key=rate_of))
        written.append(f"{stem}-scaling.png")
        line_plot({k: tuple(zip(*sorted(v))) for k, v in by_n.items()}, written[-1], "ranks [processes]",
                  "time per iteration [ms]", f"{what}, per-node links of {links}", base=2)
    return written


def parser():
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", nargs="+", default=["fo-sgd", "sgd", "signsgd-mv", "liec-sgd", "qsgd"],
                   choices=algorithms.names())
    p.add_argument("--bandwidths", nargs="+", type=link_text, default=["10mbit", "100mbit", "1gbit", "10gbit", "none"])
    p.add_argument("--widths", type=flag_type(INT, bounds=(1, 2**20)), nargs="+", default=[180, 1024],
                   help="wide-mlp widths: 180 gives d of about 100k, 1024 about 3.2M, 2048 about 12.7M")
    p.add_argument("--ranks", type=flag_type(INT, bounds=(2, 1024)), nargs="+", default=[3, 5, 9])
    p.add_argument("--servers", nargs="+", default=["1", "all"], type=flag_type(SERVERS, rule=_servers_rule))
    p.add_argument("--steps", type=flag_type(INT, bounds=(1, BIG)), default=8)
    p.add_argument("--model-network", action="store_true", help="no shaping: the alpha-beta model beside unshaped runs")
    p.add_argument("--quick", action="store_true", help="fo-sgd and sgd, 100mbit and none, d of about 100k, 3 ranks")
    p.add_argument("--out", type=out_file, help="the HDF5 file to write (PNGs beside it); default results/bandwidth_sweep-<time>.h5")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.quick:
        args.algorithms, args.bandwidths, args.widths, args.ranks, args.servers, args.steps = (
            ["fo-sgd", "sgd"], ["100mbit", "none"], [180], [3], ["1", "all"], 5)
    if args.steps < 2:
        p.error("--steps must be >= 2 (one-step runs measure the start-up traffic)")
    workdir = tempfile.mkdtemp(prefix="bandwidth-sweep-")
    records = run_grid(lambda width, ranks, bandwidth, algorithm, servers: run_point(
        workdir, algorithm, bandwidth, width, ranks, servers, args.steps, args.model_network),
        args.widths, args.ranks, args.bandwidths, args.algorithms, args.servers,
        keep=lambda width, ranks, bandwidth, algorithm, servers: servers == "1" or algorithms.get(algorithm).shardable)
    print(f"# per-node links{' (alpha-beta model only)' if args.model_network else ''}; median over steps "
          f"{min(STARTUP_ITERATIONS, args.steps - 1)}..{args.steps - 1}; bytes per worker per step")
    print(format_table(records, [("algorithm", "algorithm", "{}"), ("servers", "servers", "{}"),
                                 ("bandwidth", "link", "{}"), ("ranks", "ranks", "{}"), ("d", "d", "{:,}"),
                                 ("it_per_s", "throughput [it/s]", "{:.2f}"), ("step_ms", "step [ms]", "{:.1f}"),
                                 *[(f"{ph}_ms", f"{ph} [ms]", "{:.1f}") for ph in PHASES],
                                 ("modelled_comm_ms", "modelled comm [ms]", "{:.1f}"),
                                 ("bytes_up", "up [B]", "{:,}"), ("bytes_down", "down [B]", "{:,}"),
                                 ("node_tx_per_step", "busiest tx/step [B]", "{:,.0f}"),
                                 ("node_rx_per_step", "busiest rx/step [B]", "{:,.0f}"),
                                 ("node_tx_startup", "busiest tx start-up [B]", "{:,.0f}"),
                                 ("node_rx_startup", "busiest rx start-up [B]", "{:,.0f}"),
                                 ("error", "error", "{}")]))
    path = results_path("bandwidth_sweep", args.out)
    units = {"it_per_s": "iterations/s", "step_ms": "ms", "modelled_comm_ms": "ms", "bytes_up": "bytes per worker per step",
             "bytes_down": "bytes per worker per step", **{f"{ph}_ms": "ms" for ph in PHASES}, **LINK_UNITS}
    save_records(path, "bandwidth_sweep", records, units, meta=vars(args))
    pngs = plots(records, os.path.splitext(path)[0])
    print(f"# wrote {', '.join([path, *pngs])}; runs in {workdir}")


if __name__ == "__main__":
    main()
