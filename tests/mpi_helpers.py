"""Running real `mpirun` jobs from the tests (the venv's MPICH, oversubscribed)."""
from fobsgd_mpi.jobs import ROOT, free_port, job_env, mpirun, mpirun_path, summary_of  # noqa: F401


def train(n, tmp_path, *args, name="run.h5"):
    out = tmp_path / name
    done = mpirun(n, "fobsgd_mpi.train", "--quiet", "--out", out, *args, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return out, summary_of(done.stdout)
