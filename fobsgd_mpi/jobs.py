"""Starting training jobs under mpirun from Python (benchmarks and tests share this).

The MPI launcher is the one beside the running interpreter (the venv's mpich wheel), or $MPIRUN.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def mpirun_path():
    return os.environ.get("MPIRUN") or str(pathlib.Path(sys.executable).parent / "mpirun")


def job_env():
    """Environment for oversubscribed local jobs (also as root, for Open MPI), one thread a rank."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# what a job asked to end (SIGTERM) has to end its ranks and remove its namespaces before it is killed
GRACE_S = 30


def run_captured(cmd, timeout, env):
    """subprocess.run(cmd, capture_output=True, text=True, timeout=timeout), except that a job past
    its time (or interrupted) is asked to end first: SIGTERM, which mpirun passes on to its ranks
    and on which fobsgd_mpi.launch removes its network namespaces; SIGKILL only GRACE_S later."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(job_env(), **(env or {})), cwd=ROOT) as job:
        try:
            out, err = job.communicate(timeout=timeout)
        except BaseException as exc:
            job.terminate()
            try:
                out, err = job.communicate(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                job.kill()
                out, err = job.communicate()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
            raise
    return subprocess.CompletedProcess(cmd, job.returncode, out, err)


def launch(*args, timeout=600, env=None):
    """`python -m fobsgd_mpi.launch ARGS` (shaped links), output captured; `env` adds variables."""
    return run_captured([sys.executable, "-m", "fobsgd_mpi.launch", *map(str, args)], timeout, env)


def error_line(stderr):
    """The last line a failed job wrote to its standard error `stderr`."""
    return (stderr.strip().splitlines() or ["no output"])[-1]


def mpirun(n, module, *args, timeout=600, env=None):
    """`mpirun -n N python -m MODULE ARGS`, output captured; `env` adds variables."""
    return run_captured([mpirun_path(), "-n", str(n), sys.executable, "-m", module, *map(str, args)], timeout, env)


def mpirun_batch(n, runs, spec, timeout=600, env=None):
    """The argument lists `runs` of `fobsgd_mpi.train`, in order, in one `mpirun -n N` job
    (fobsgd_mpi.batch), through the file `spec`. Returns the finished job and, for each run it
    finished, {returncode, stdout, stderr}: fewer than `runs` when the job ended early."""
    with open(spec, "w") as f:
        json.dump([list(map(str, args)) for args in runs], f)
    results = pathlib.Path(f"{spec}.out")
    results.unlink(missing_ok=True)
    done = mpirun(n, "fobsgd_mpi.batch", spec, timeout=timeout, env=env)
    return done, json.loads(results.read_text()) if results.exists() else []


def free_port():
    """A TCP port nobody listens on now (for a rendezvous such as torch's MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary_of(stdout):
    """The '# summary {...}' line that rank 0 of fobsgd_mpi.train prints, parsed."""
    for line in stdout.splitlines():
        if line.startswith("# summary "):
            return json.loads(line[len("# summary "):])
    return None
