"""fobsgd_mpi.batch: several train runs in one mpirun job are the runs separate jobs would make."""
import json

import h5py
import numpy as np
import pytest

from fobsgd_mpi import batch

from .mpi_helpers import train, train_runs

pytestmark = pytest.mark.mpi

FO_SGD = ["--algorithm", "fo-sgd", "--dataset", "digits", "--model", "mlp", "--width", "32", "--steps", "6",
          "--eval-every", "3", "--seed", "1"]


def final_params(path):
    with h5py.File(path, "r") as f:
        return f["final_params"][:]


def test_runs_in_one_job_equal_runs_in_their_own_jobs_and_a_bad_one_stops_nothing(tmp_path):
    runs = train_runs(3, tmp_path, {
        "fo-sgd": FO_SGD,
        "bad-lr": [*FO_SGD, "--lr", "-1"],
        "sgd": ["--algorithm", "sgd", "--dataset", "synthetic-logreg", "--model", "mlp", "--width", "16",
                "--steps", "4"],
        "fo-sgd-again": FO_SGD,
    }, check=False)
    assert [r.returncode for r in runs.values()] == [0, 2, 0, 0]
    assert runs["bad-lr"].stderr.strip().splitlines() == ["error: --lr must lie in (0, 10000], got -1"]
    alone, summary = train(3, tmp_path, *FO_SGD, name="alone.h5")
    assert np.array_equal(final_params(runs["fo-sgd"].out), final_params(alone))
    assert np.array_equal(final_params(runs["fo-sgd-again"].out), final_params(alone))
    assert runs["fo-sgd"].summary["bytes_up_per_worker"] == summary["bytes_up_per_worker"]


@pytest.mark.parametrize("spec, message", [
    (None, "No such file or directory"),
    ('{"runs": 1}', "must hold a list of argument lists (lists of strings)"),
    ('[["--steps", 3]]', "must hold a list of argument lists (lists of strings)"),
    ("[[", "is not JSON (Expecting value"),
])
def test_a_bad_runs_file_is_one_line_and_exit_2(spec, message, tmp_path, capsys):
    path = tmp_path / "runs.json"
    if spec is not None:
        path.write_text(spec)
    assert batch.main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert batch.main([]) == 2
    assert "usage: mpirun -n N python -m fobsgd_mpi.batch RUNS.json" in capsys.readouterr().err
