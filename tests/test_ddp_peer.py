"""The torch DDP peer (fobsgd_mpi.ddp) under real mpirun: it must train exactly what the harness
trains, so time-to-accuracy comparisons differ only in how the gradients travel."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from .mpi_helpers import ROOT, job_env, mpirun, train

pytestmark = pytest.mark.mpi
COMMON = ["--dataset", "synthetic-logreg", "--model", "mlp", "--width", "64", "--steps", "12", "--eval-every", "6",
          "--lr", "0.05", "--seed", "5"]


def ddp(tmp_path, *args, name="ddp.h5"):
    out = tmp_path / name
    done = mpirun(2, "fobsgd_mpi.ddp", "--out", out, "--quiet", *args, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(out) as f:
        return f["final_params"][:], f["iterations/bytes_up"][:], f["evals/test_accuracy"][:], int(f.attrs["d"])


def test_ddp_without_hook_equals_the_harness_sgd(tmp_path):
    ref, _ = train(2, tmp_path, "--algorithm", "sgd", "--server-also-works", *COMMON)
    with h5py.File(ref) as f:
        params, acc = f["final_params"][:], f["evals/test_accuracy"][:]
    got, sent, got_acc, d = ddp(tmp_path, "--hook", "none", *COMMON)
    np.testing.assert_allclose(got, params, rtol=1e-4, atol=1e-6)
    assert np.array_equal(got_acc, acc)
    assert set(sent.tolist()) == {4 * d}


def test_fp16_and_powersgd_hooks_train_and_count_their_bytes(tmp_path):
    _, sent, acc, d = ddp(tmp_path, "--hook", "fp16", *COMMON, name="fp16.h5")
    assert set(sent.tolist()) == {2 * d} and np.isfinite(acc).all()
    _, sent, acc, d = ddp(tmp_path, "--hook", "powersgd", "--powersgd-start", "4", *COMMON, name="psgd.h5")
    assert (sent[:4] == 4 * d).all() and (sent[4:] < d / 3).all() and np.isfinite(acc).all()


def test_bad_settings_are_one_line_errors(tmp_path):
    done = mpirun(2, "fobsgd_mpi.ddp", "--out", tmp_path / "x.h5", "--hook", "powersgd", "--powersgd-start", "1",
                  timeout=120)
    assert done.returncode == 2 and "--powersgd-start" in done.stderr
    plain = subprocess.run([sys.executable, "-m", "fobsgd_mpi.ddp", "--out", str(tmp_path / "y.h5")], cwd=ROOT,
                           capture_output=True, text=True, env={k: v for k, v in job_env().items()
                                                                if not k.startswith(("PMI_", "OMPI_", "SLURM_"))})
    assert plain.returncode == 2 and "mpirun" in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
