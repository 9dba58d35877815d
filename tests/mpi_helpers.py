"""Running real `mpirun` jobs from the tests (the venv's MPICH, oversubscribed)."""
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time

import h5py

from fobsgd_mpi.jobs import ROOT, free_port, job_env, mpirun, mpirun_batch, mpirun_path, summary_of  # noqa: F401


def train(n, tmp_path, *args, name="run.h5", timeout=240):
    out = tmp_path / name
    done = mpirun(n, "fobsgd_mpi.train", "--quiet", "--out", out, *args, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return out, summary_of(done.stdout)


def start(n, module, *args, env=None):
    """`mpirun -n N python -m MODULE ARGS` in the background, text output captured; `env` adds variables."""
    cmd = [mpirun_path(), "-n", str(n), sys.executable, "-m", module, *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(job_env(), **(env or {})), cwd=ROOT)


def wait_for_evals(out, job, count=2, timeout=120):
    """Returns once the running `job` has flushed `count` evaluations to `out`."""
    deadline = time.time() + timeout
    while time.time() < deadline and job.poll() is None:
        try:
            with h5py.File(out, "r", locking=False) as f:
                if len(f["evals/step"]) >= count:
                    return
        except (OSError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no rows appeared in {out}")


def busy_out_refused_then_interrupted(n, module, out, *args, env=None, second_env=None):
    """Start `module` writing `out`; check that a second job with --overwrite on the same `out` is
    refused in one line (exit 2) while the first goes on; then Ctrl-C the first. Returns its
    (exit status, stderr)."""
    job = start(n, module, "--quiet", "--out", out, *args, env=env)
    try:
        wait_for_evals(out, job)
        second = mpirun(n, module, "--quiet", "--out", out, "--overwrite", *args, timeout=120, env=second_env)
        assert second.returncode == 2 and second.stderr.strip().count("\n") == 0, second.stderr[-2000:]
        assert f"{out} is being written by a running job (pid " in second.stderr
        assert job.poll() is None, "the running job must go on"
        job.send_signal(signal.SIGINT)
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    return job.returncode, stderr


Run = collections.namedtuple("Run", "out summary returncode stderr")


def train_runs(n, tmp_path, runs, check=True, timeout=600):
    """Each `name: args` of `runs` as `train` runs it (into tmp_path/NAME.h5), in order, all in one
    `mpirun -n N` job (fobsgd_mpi.batch). Returns {name: Run}; with `check`, every run must exit 0."""
    fd, spec = tempfile.mkstemp(dir=tmp_path, prefix="runs-", suffix=".json")
    os.close(fd)
    done, records = mpirun_batch(n, [["--quiet", "--out", tmp_path / f"{name}.h5", *args] for name, args in runs.items()],
                                 spec, timeout=timeout)
    assert done.returncode == 0 and len(records) == len(runs), done.stdout[-2000:] + done.stderr[-3000:]
    found = {}
    for name, record in zip(runs, records):
        assert not check or record["returncode"] == 0, (name, record["stderr"][-2000:])
        found[name] = Run(tmp_path / f"{name}.h5", summary_of(record["stdout"]), record["returncode"],
                          record["stderr"])
    return found
