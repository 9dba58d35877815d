"""fobsgd_mpi.batch: several train runs in one mpirun job are the runs separate jobs would make."""
import h5py
import numpy as np
import pytest

from fobsgd_mpi import batch

from .mpi_helpers import mpirun_batch, summary_of, train

pytestmark = pytest.mark.mpi

FO_SGD = ["--algorithm", "fo-sgd", "--dataset", "digits", "--model", "mlp", "--width", "32", "--steps", "6",
          "--eval-every", "3", "--seed", "1"]


def final_params(path):
    with h5py.File(path, "r") as f:
        return f["final_params"][:]


def test_runs_in_one_job_equal_runs_in_their_own_jobs_and_a_bad_one_stops_nothing(tmp_path):
    runs = {
        "fo-sgd": FO_SGD,
        "bad-lr": [*FO_SGD, "--lr", "-1"],
        "sgd": ["--algorithm", "sgd", "--dataset", "synthetic-logreg", "--model", "mlp", "--width", "16",
                "--steps", "4"],
        "fo-sgd-again": FO_SGD,
    }
    done, records = mpirun_batch(3, [["--quiet", "--out", tmp_path / f"{name}.h5", *args] for name, args in runs.items()],
                                 tmp_path / "runs.json")
    assert done.returncode == 0 and [r["returncode"] for r in records] == [0, 2, 0, 0]
    message = "error: --lr must lie in (0, 10000], got -1"
    assert records[1]["stderr"].strip().splitlines() == [message]
    assert message in done.stderr  # the job's own stderr has it too: an aborted job keeps its message
    alone, summary = train(3, tmp_path, *FO_SGD, name="alone.h5")
    assert np.array_equal(final_params(tmp_path / "fo-sgd.h5"), final_params(alone))
    assert np.array_equal(final_params(tmp_path / "fo-sgd-again.h5"), final_params(alone))
    assert summary_of(records[0]["stdout"])["bytes_up_per_worker"] == summary["bytes_up_per_worker"]


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
