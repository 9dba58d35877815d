"""Running real `mpirun` jobs from the tests (the venv's MPICH, oversubscribed)."""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MPIRUN = str(pathlib.Path(sys.executable).parent / "mpirun")


def mpi_env():
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("FOBSGD_ISA", None)
    return env


def mpirun(n, module, *args, timeout=240):
    cmd = [MPIRUN, "-n", str(n), sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=mpi_env(), cwd=ROOT)


def train(n, tmp_path, *args, name="run.h5"):
    out = tmp_path / name
    done = mpirun(n, "fobsgd_mpi.train", "--quiet", "--out", out, *args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    summary = next(json.loads(line[len("# summary "):]) for line in done.stdout.splitlines()
                   if line.startswith("# summary "))
    return out, summary
