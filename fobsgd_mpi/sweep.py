"""Expand a grid of training runs into a SLURM or PBS job array and a results index.

    python -m fobsgd_mpi.sweep grid.toml [--scheduler slurm|pbs] [--ranks-per-node 1] [--out-dir results/sweep-NAME]
                              [--overwrite]

grid.toml: `name`, `ranks` (workers + 1), `time`; a [grid] table of lists (every combination is
one array task) and a [fixed] table of single values, both keyed by fobsgd_mpi.train's long flags.
Writes OUT_DIR/jobs.txt (one task's flags per line), OUT_DIR/index.csv (task, grid values, result
file) and OUT_DIR/sweep.sbatch or sweep.pbs; submit that with sbatch or qsub. Every task is
checked against the training CLI first, and against `ranks` as the job would check it (--servers,
--slow-ranks, a worker's share of an array data set against --batch-size), so a typo fails here
and not an hour into the queue.
Each task asks for one rank per node by default, so the exchange crosses the nodes' links (what
a per-node-link measurement needs); --ranks-per-node packs more. The script templates ship
inside the package (fobsgd_mpi/job_templates/).
"""
import argparse
import csv
import itertools
import math
import os
import re
import shlex
import sys
import tomllib
from importlib import resources

from .config import INT, OneLineParser, flag_type, parse_config
from .errors import EXIT_USAGE
from .workload import check_ranks

TEMPLATES = {"slurm": "slurm_sweep.sbatch.in", "pbs": "pbs_sweep.pbs.in"}
MAX_RANKS = 2**20
DEFAULT_RANKS = 9
WALL_TIME = re.compile(r"(\d+-)?\d+(:\d{2}){0,2}")  # what both sbatch --time and qsub walltime read
PER_TASK = {"resume": "every task starts its own run; to continue one, rerun its line of jobs.txt with --resume",
            "save_model": "every task would write the same model file; vary it in [grid], or leave it out"}
SPEC_TYPES = {"name": (str, "a string"), "ranks": (int, "an integer"), "time": (str, 'a string like "01:00:00"'),
              "grid": (dict, "a table of lists"), "fixed": (dict, "a table of single values")}


def flag(key, value):
    name = "--" + key.replace("_", "-")
    if value is True:
        return [name]
    if value is False:
        return []
    return [name, str(value)]


def read_grid(grid_file):
    """The grid file's tables and values, each of its type; ValueError naming the first that is not."""
    try:
        with open(grid_file, "rb") as f:
            spec = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"this file is not valid TOML: {exc}") from None
    unknown = sorted(spec.keys() - SPEC_TYPES.keys())
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; a grid file has {', '.join(SPEC_TYPES)}")
    for key, (kind, what) in SPEC_TYPES.items():
        if key in spec and type(spec[key]) is not kind:
            raise ValueError(f"{key} must be {what}, got {spec[key]!r}")
    if "/" in spec.get("name", ""):
        raise ValueError(f"name names a folder and a job, so it cannot hold a /: got {spec['name']!r}")
    if not 2 <= spec.get("ranks", 2) <= MAX_RANKS:
        raise ValueError(f"ranks must lie in [2, {MAX_RANKS}] (a server and at least one worker), got {spec['ranks']}")
    if not WALL_TIME.fullmatch(spec.get("time", "01:00:00")):
        raise ValueError(f'time must be a wall-time limit like "01:00:00", "90:00" or "1-12:00:00", got {spec["time"]!r}')
    return spec


def expand(spec, out_dir):
    """Tasks as (grid values, train argv) after checking each against the training CLI."""
    grid, fixed = spec.get("grid", {}), spec.get("fixed", {})
    bad = [k for k, v in grid.items() if not isinstance(v, list) or not v]
    if bad:
        raise ValueError(f"[grid] values must be non-empty lists: {', '.join(bad)}")
    listed = [k for k, v in fixed.items() if isinstance(v, (list, dict))]
    if listed:
        raise ValueError(f"[fixed] values must be single values (lists go in [grid]): {', '.join(listed)}")
    if "out" in grid or "out" in fixed:
        raise ValueError("leave out `out`: each task gets its own file under the sweep folder")
    shared = [key for key in PER_TASK if key.replace("_", "-") in fixed or key in fixed]
    if shared:
        raise ValueError(f"[fixed] {shared[0]}: {PER_TASK[shared[0]]}")
    if "resume" in grid:
        raise ValueError(f"[grid] resume: {PER_TASK['resume']}")
    keys = list(grid)
    tasks = []
    for i, values in enumerate(itertools.product(*(grid[k] for k in keys))):
        point = dict(zip(keys, values))
        tag = "-".join(f"{k}{v}" if k != "algorithm" else str(v) for k, v in point.items())
        out = os.path.join(out_dir, f"task{i:04d}-{tag}.h5".replace("/", "_"))
        argv = [a for k, v in {**fixed, **point}.items() for a in flag(k, v)] + ["--out", out, "--quiet"]
        try:
            check_ranks(parse_config(argv), spec.get("ranks", DEFAULT_RANKS))
        except ValueError as exc:
            raise ValueError(f"task {i} ({point}): {exc}") from None
        tasks.append((point, argv, out))
    return spec, keys, tasks


def render(template, values):
    text = (resources.files(__package__) / "job_templates" / template).read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    return text


def build_parser():
    p = OneLineParser(prog="python -m fobsgd_mpi.sweep", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid")
    p.add_argument("--scheduler", choices=sorted(TEMPLATES), default="slurm")
    p.add_argument("--ranks-per-node", type=flag_type(INT, bounds=(1, 2**20)), default=1,
                   help="MPI ranks on one node (default 1: every rank has its own node and link)")
    p.add_argument("--out-dir", default=None)
    p.add_argument("--overwrite", action="store_true", help="replace the jobs.txt, index.csv and script of an "
                                                           "earlier sweep in --out-dir")
    return p


def write_sweep(args, spec, keys, tasks, out_dir):
    """jobs.txt, index.csv and the job script in out_dir; returns the script's path."""
    name = spec.get("name", "sweep")
    ranks = spec.get("ranks", DEFAULT_RANKS)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "jobs.txt"), "w") as f:
        f.writelines(shlex.join(a) + "\n" for _, a, _ in tasks)
    with open(os.path.join(out_dir, "index.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", *keys, "result"])
        w.writerows([i, *(point[k] for k in keys), out] for i, (point, _, out) in enumerate(tasks))
    script = os.path.join(out_dir, "sweep." + ("sbatch" if args.scheduler == "slurm" else "pbs"))
    with open(script, "w") as f:
        f.write(render(TEMPLATES[args.scheduler], {
            "NAME": name, "N_TASKS": len(tasks), "LAST_TASK": len(tasks) - 1, "RANKS": ranks,
            "RANKS_PER_NODE": args.ranks_per_node, "NODES": math.ceil(ranks / args.ranks_per_node),
            "TIME": spec.get("time", "01:00:00"), "OUT_DIR": out_dir, "WORKDIR": os.getcwd(),
            "PYTHON": sys.executable}))
    os.chmod(script, 0o755)
    return script


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        spec = read_grid(args.grid)
        out_dir = os.path.abspath(args.out_dir or os.path.join("results", f"sweep-{spec.get('name', 'sweep')}"))
        spec, keys, tasks = expand(spec, out_dir)
    except ValueError as exc:
        print(f"error: {args.grid}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if os.path.exists(os.path.join(out_dir, "jobs.txt")) and not args.overwrite:
        print(f"error: {out_dir} holds a sweep already (jobs.txt); pass --overwrite or choose another --out-dir",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        script = write_sweep(args, spec, keys, tasks, out_dir)
    except OSError as exc:
        print(f"error: cannot write the sweep in {out_dir} ({exc.strerror}: {exc.filename}); choose a writable "
              "--out-dir", file=sys.stderr)
        return EXIT_USAGE
    submit = "sbatch" if args.scheduler == "slurm" else "qsub"
    print(f"# {len(tasks)} tasks -> {out_dir}/jobs.txt, index.csv; submit with: {submit} {script}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
