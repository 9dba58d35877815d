"""Partial participation and stragglers (real mpirun)."""
import json

import h5py
import numpy as np
import pytest

from fobsgd_mpi import compressors

from .mpi_helpers import mpirun, train

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("algorithm", ["fo-sgd", "liec-sgd", "sgd", "signsgd-mv"])
def test_partial_participation(algorithm, tmp_path):
    out, summary = train(5, tmp_path, "--algorithm", algorithm, "--dataset", "digits", "--steps", "8",
                         "--participation", "0.5", "--check-every", "4", "--liec-period", "4")
    with h5py.File(out) as f:
        assert set(f["iterations/participants"][:]) == {2}  # half of 4 workers every round
        assert json.loads(f.attrs["config"])["participation"] == 0.5
    assert np.isfinite(summary["final_test_loss"])


def test_participating_subset_changes_and_bytes_are_per_sender(tmp_path):
    out, _ = train(5, tmp_path, "--algorithm", "fo-sgd", "--dataset", "digits", "--steps", "6",
                   "--participation", "0.25")
    with h5py.File(out) as f:
        d = int(f.attrs["d"])
        assert set(f["iterations/participants"][:]) == {1}
        assert set(f["iterations/bytes_up"][:]) == {compressors.get("fo1bit").payload_nbytes(d)}


def test_slow_ranks_run_and_are_recorded(tmp_path):
    out, _ = train(3, tmp_path, "--algorithm", "fo-sgd", "--dataset", "digits", "--steps", "5", "--slow-ranks", "2:3.0")
    with h5py.File(out) as f:
        assert json.loads(f.attrs["config"])["slow_ranks"] == "2:3.0"


@pytest.mark.parametrize("args, message", [
    (["--slow-ranks", "2-3"], "is not rank:factor"),
    (["--slow-ranks", "1:0.5"], "a factor in [1, 1000]"),
    (["--slow-ranks", "0:2"], "not workers"),
    (["--participation", "0"], "--participation must lie in (0, 1]"),
])
def test_bad_heterogeneity_flags(args, message, tmp_path):
    done = mpirun(3, "fobsgd_mpi.train", "--quiet", "--steps", "2", "--out", tmp_path / "x.h5", *args)
    assert done.returncode != 0
    assert message in done.stderr
