"""Several `fobsgd_mpi.train` command lines one after another in one mpirun job, on the same ranks.

    mpirun -n 9 python -m fobsgd_mpi.batch RUNS.json

RUNS.json holds a list of argument lists, each one `train`'s command line. The runs share one
start-up: with 9 ranks on 2 cores, starting the ranks (importing torch and torch.optim, loading
the data) took about 70 s of a 90 s MNIST-1D run. Each run still goes through train.main, lock and
all, so it is the run a job of its own would make. After every run rank 0 rewrites RUNS.json.out,
a list with each finished run's exit status and rank 0's stdout and stderr, so a job cut short
keeps what it finished. Standard error also reaches the job's own, from every rank, so the message
of a rank that aborts the job is not lost. A stop signal (Ctrl-C, scancel) ends the batch after
the run it interrupted; a run that fails otherwise does not stop the others.
"""
import contextlib
import io
import json
import os
import sys

from . import train
from .errors import EXIT_USAGE, exit_without_finalizing
from .launcher_env import rank_from_environment


class Tee(io.TextIOBase):
    """Writes go to `kept` and to `stream`."""

    def __init__(self, kept, stream):
        self.kept, self.stream = kept, stream

    def write(self, text):
        self.stream.write(text)
        return self.kept.write(text)

    def flush(self):
        self.stream.flush()


def write_atomically(path, records):
    with open(path + ".tmp", "w") as f:
        json.dump(records, f)
    os.replace(path + ".tmp", path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    rank = rank_from_environment()
    try:
        if len(argv) != 1:
            raise ValueError("usage: mpirun -n N python -m fobsgd_mpi.batch RUNS.json")
        with open(argv[0]) as f:
            try:
                runs = json.load(f)
            except ValueError as exc:
                raise ValueError(f"{argv[0]} is not JSON ({exc})") from None
        if not (isinstance(runs, list) and all(isinstance(a, list) and all(isinstance(s, str) for s in a)
                                               for a in runs)):
            raise ValueError(f"{argv[0]} must hold a list of argument lists (lists of strings)")
    except (OSError, ValueError) as exc:
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    records = []
    for args in runs:
        if rank == 0:
            stdout, stderr = io.StringIO(), Tee(io.StringIO(), sys.stderr)
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                code = train.main(args)
            records.append({"returncode": code, "stdout": stdout.getvalue(), "stderr": stderr.kept.getvalue()})
            write_atomically(argv[0] + ".out", records)
        else:  # its errors go straight to the job's stderr: an abort leaves no record to hold them
            code = train.main(args)
        if code > 128:  # a stop signal: the whole batch stops, as a single run would
            return code
    return 0


if __name__ == "__main__":
    exit_without_finalizing(main())
