"""Checkpoint / resume, failures, handshake, non-finite gradients, determinism (real mpirun)."""
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from fobsgd_mpi.jobs import job_env, mpirun_path

from .mpi_helpers import ROOT, mpirun, train

pytestmark = pytest.mark.mpi
CURVES = ("step", "train_loss", "bytes_up", "bytes_down", "replica_spread")


def curves(path):
    with h5py.File(path) as f:
        return ({k: f["iterations"][k][:] for k in CURVES}, {k: f["evals"][k][:] for k in f["evals"] if k != "wall_s"},
                f["final_params"][:])


@pytest.mark.parametrize("algorithm", ["fo-sgd", "liec-sgd", "doublesqueeze"])
def test_stopped_and_resumed_run_equals_the_uninterrupted_one(algorithm, tmp_path):
    common = ["--algorithm", algorithm, "--dataset", "digits", "--steps", "40", "--checkpoint-every", "10",
              "--eval-every", "10", "--liec-period", "8"]
    whole, _ = train(3, tmp_path, *common, name="whole.h5")
    part, first = train(3, tmp_path, *common, "--stop-at", "24", name="part.h5")
    assert first["steps"] == 25
    done = mpirun(3, "fobsgd_mpi.train", "--quiet", "--out", part, "--resume", *common)
    assert done.returncode == 0, done.stderr[-2000:]
    (ia, ea, pa), (ib, eb, pb) = curves(whole), curves(part)
    for k in CURVES:
        assert np.array_equal(ia[k], ib[k]), k
    for k in ea:
        assert np.array_equal(ea[k], eb[k]), k
    assert np.array_equal(pa, pb)


def test_same_seed_gives_identical_curves(tmp_path):
    args = ["--algorithm", "fo-sgd", "--steps", "30", "--eval-every", "10"]
    a, _ = train(4, tmp_path, *args, name="a.h5")
    b, _ = train(4, tmp_path, *args, name="b.h5")
    (ia, ea, pa), (ib, eb, pb) = curves(a), curves(b)
    assert all(np.array_equal(ia[k], ib[k]) for k in CURVES)
    assert all(np.array_equal(ea[k], eb[k]) for k in ea) and np.array_equal(pa, pb)


def test_handshake_refuses_ranks_with_different_configs(tmp_path):
    out = tmp_path / "x.h5"
    py = [sys.executable, "-m", "fobsgd_mpi.train", "--quiet", "--steps", "3", "--out", str(out)]
    cmd = [mpirun_path(), "-n", "1", *py, "--lr", "0.1", ":", "-n", "2", *py, "--lr", "0.2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=job_env(), cwd=ROOT)
    assert done.returncode != 0
    assert "disagree with rank 0 on the config" in done.stderr


def test_non_finite_gradients_stop_or_skip(tmp_path):
    blow_up = ["--algorithm", "sgd", "--dataset", "synthetic-quadratic", "--model", "logreg", "--lr", "50",
               "--momentum", "0", "--lr-schedule", "constant", "--steps", "60", "--eval-every", "5"]
    done = mpirun(3, "fobsgd_mpi.train", "--quiet", "--out", tmp_path / "stop.h5", *blow_up)
    assert done.returncode != 0 and "NaN or Inf gradient at step" in done.stderr
    with h5py.File(tmp_path / "stop.h5") as f:  # rows up to the failure survive
        assert len(f["iterations/step"]) > 0
    out, summary = train(3, tmp_path, *blow_up, "--on-nonfinite", "skip", name="skip.h5")
    with h5py.File(out) as f:
        assert f.attrs["skipped_steps"] > 0
        assert len(f["iterations/step"]) == 60 - f.attrs["skipped_steps"]


def _rank_pids(marker):
    pids = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in b" ".join(cmdline) and b"fobsgd_mpi.train" in b" ".join(cmdline):
            rank = [e for e in env if e.startswith(b"PMI_RANK=")]
            if rank:
                pids[int(rank[0].split(b"=")[1])] = int(pid)
    return pids


def test_killed_worker_ends_the_job_and_keeps_results(tmp_path):
    out = tmp_path / "killed.h5"
    cmd = [mpirun_path(), "-n", "3", sys.executable, "-m", "fobsgd_mpi.train", "--quiet", "--out", str(out),
           "--dataset", "digits", "--steps", "100000", "--eval-every", "20", "--checkpoint-every", "20"]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=job_env(), cwd=ROOT)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not os.path.exists(str(out) + ".ckpt/rank0.npz"):
            time.sleep(0.5)
        assert os.path.exists(str(out) + ".ckpt/rank0.npz"), "no checkpoint was written"
        time.sleep(2)
        os.kill(_rank_pids(str(out))[1], signal.SIGKILL)
        t0 = time.time()
        job.wait(timeout=30)
        assert time.time() - t0 < 30 and job.returncode != 0
    finally:
        if job.poll() is None:
            job.kill()
    with h5py.File(out) as f:  # readable, every flushed row there
        steps = f["iterations/step"][:]
        assert len(steps) >= 20 and np.array_equal(steps, np.arange(len(steps)))
    stop = len(steps) + 30  # past the last checkpoint, which is at most the last flushed row
    done = mpirun(3, "fobsgd_mpi.train", "--quiet", "--out", out, "--resume", "--dataset", "digits", "--steps",
                  "100000", "--eval-every", "20", "--checkpoint-every", "20", "--stop-at", stop)
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(out) as f:
        assert np.array_equal(f["iterations/step"][:], np.arange(stop + 1))
