"""Partial participation and stragglers (real mpirun)."""
import json

import h5py
import numpy as np
import pytest

from fobsgd_mpi import compressors
from fobsgd_mpi import train as train_cli

from .mpi_helpers import train, train_runs

pytestmark = pytest.mark.mpi


PARTIAL = ("fo-sgd", "liec-sgd", "sgd", "signsgd-mv")


@pytest.fixture(scope="module")
def partial_runs(tmp_path_factory):
    """Half of 4 workers a round for each of PARTIAL, and a quarter for fo-sgd, in one 5-rank job."""
    runs = {algorithm: ["--algorithm", algorithm, "--dataset", "digits", "--steps", "8", "--participation", "0.5",
                        "--check-every", "4", "--liec-period", "4"] for algorithm in PARTIAL}
    runs["quarter"] = ["--algorithm", "fo-sgd", "--dataset", "digits", "--steps", "6", "--participation", "0.25"]
    return train_runs(5, tmp_path_factory.mktemp("partial"), runs)


@pytest.mark.parametrize("algorithm", PARTIAL)
def test_partial_participation(algorithm, partial_runs):
    out, summary = partial_runs[algorithm][:2]
    with h5py.File(out) as f:
        assert set(f["iterations/participants"][:]) == {2}  # half of 4 workers every round
        assert json.loads(f.attrs["config"])["participation"] == 0.5
    assert np.isfinite(summary["final_test_loss"])


def test_participating_subset_changes_and_bytes_are_per_sender(partial_runs):
    with h5py.File(partial_runs["quarter"].out) as f:
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
    (["--participation", "0"], "--participation must lie in (0, 1]"),
])
def test_bad_heterogeneity_flags(args, message, tmp_path, capsys):
    assert train_cli.main(["--quiet", "--steps", "2", "--out", str(tmp_path / "x.h5"), *args]) == 2
    assert message in capsys.readouterr().err
