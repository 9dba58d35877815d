"""Distributed training on a rank-0 parameter server with compressed exchanges.

    mpirun -n 4 python -m fobsgd_mpi.train                      # FO-SGD, MLP on MNIST-1D
    mpirun -n 8 python -m fobsgd_mpi.train --algorithm liec-sgd --model cnn1d --epochs 30
    mpirun -n 4 python -m fobsgd_mpi.train --config run.toml --lr 0.02   # flags override the file

Rank 0 is the server (it evaluates the model and writes results/*.h5); ranks 1..n-1 are workers
(--server-also-works makes rank 0 compute a gradient too). Every rank applies the same optimizer
step to the broadcast update, and a cross-rank checksum every --check-every steps stops the run
if replicas that must be identical are not. The loop itself is loop.py, which the Python API (api.py)
runs too.
"""
import datetime
import os
import sys

from .config import parse_config
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, JobError, exit_without_finalizing
from .launcher_env import rank_from_environment
from .loop import claim_output, run
from .results import output_problem


def default_out(cfg, n):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return os.path.join("results", f"{cfg.algorithm}-{cfg.dataset}-{cfg.model}-n{n}-s{cfg.seed}-{stamp}.h5")


def main(argv=None):
    try:
        cfg = parse_config(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        if rank_from_environment() == 0:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = output_problem(cfg, cfg.save_model)
    if problem:
        if rank_from_environment() == 0:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from .results import ResultsError
    from .transport import abort_job, mpi
    MPI = mpi()
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    if comm.Get_size() < 2:
        print("error: the parameter server needs at least 2 ranks (a server and a worker); "
              "start with `mpirun -n 4 python -m fobsgd_mpi.train`", file=sys.stderr)
        return EXIT_USAGE
    lock = None
    if rank == 0:
        cfg.out = cfg.out or default_out(cfg, comm.Get_size())
        try:
            lock = claim_output(cfg, comm.Get_size())
        except (OSError, ValueError) as exc:
            problem = str(exc)
    cfg.out, problem = comm.bcast((cfg.out, problem), root=0)
    if problem:
        if rank == 0:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    code = 0
    try:
        run(cfg, comm)
    except (JobError, ResultsError) as exc:  # a ResultsError reaches here on rank 0 only, when closing
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        code = getattr(exc, "exit_code", 1)
    except KeyboardInterrupt as exc:
        if rank == 0:
            print(f"{exc or 'interrupted'}", file=sys.stderr, flush=True)
        code = getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except Exception as exc:  # one rank's failure ends the job with its message, never a hang
        print(f"error on rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr)
        abort_job(comm, 1)
    finally:
        if lock is not None:
            lock.release()
    return code


if __name__ == "__main__":
    exit_without_finalizing(main())
