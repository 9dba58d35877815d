"""Several `fobsgd_mpi.train` command lines one after another in one mpirun job, on the same ranks,
for the tests that need many short runs: they then share one start-up (importing torch and
torch.optim takes seconds per rank). Each run still goes through train.main, lock and all.

    mpirun -n 4 python -m tests.many_runs RUNS.json

RUNS.json holds a list of argument lists; rank 0 writes RUNS.json.out, a list with each run's exit
status and rank 0's stdout and stderr.
"""
import contextlib
import io
import json
import sys

from fobsgd_mpi import train
from fobsgd_mpi.errors import exit_without_finalizing
from fobsgd_mpi.launcher_env import rank_from_environment


def main(path):
    with open(path) as f:
        runs = json.load(f)
    results = []
    for argv in runs:
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = train.main(argv)
        results.append({"returncode": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
    if rank_from_environment() == 0:
        with open(path + ".out", "w") as f:
            json.dump(results, f)
    return 0


if __name__ == "__main__":
    exit_without_finalizing(main(sys.argv[1]))
