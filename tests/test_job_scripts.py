"""Job scripts: every template renders, passes `bash -n`, and its command runs here under mpirun
(the scheduler itself is not on this machine: LAUNCH replaces srun)."""
import os
import subprocess
import sys

import h5py
import pytest

from fobsgd_mpi import sweep
from fobsgd_mpi.jobs import ROOT, job_env, mpirun_path

GRID = """
name = "tiny"
ranks = 3
[grid]
algorithm = ["fo-sgd", "sgd"]
seed = [0, 1]
[fixed]
dataset = "digits"
model = "logreg"
steps = 3
"""


@pytest.mark.parametrize("script", sorted(p for p in os.listdir(ROOT / "job_scripts")
                                          if p.endswith((".sbatch", ".pbs"))))
def test_static_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(ROOT / "job_scripts" / script)]).returncode == 0


@pytest.mark.parametrize("scheduler, task_var, suffix", [("slurm", "SLURM_ARRAY_TASK_ID", "sbatch"),
                                                         ("pbs", "PBS_ARRAY_INDEX", "pbs")])
def test_sweep_renders_and_a_task_runs_locally(scheduler, task_var, suffix, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "sweep"
    assert sweep.main([str(grid), "--scheduler", scheduler, "--out-dir", str(out)]) == 0
    script = out / f"sweep.{suffix}"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    lines = (out / "jobs.txt").read_text().splitlines()
    index = (out / "index.csv").read_text().splitlines()
    assert len(lines) == 4 and index[0] == "task,algorithm,seed,result" and len(index) == 5
    env = dict(job_env(), **{task_var: "2", "LAUNCH": f"{mpirun_path()} -n 3", "PYTHON": sys.executable})
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    result = index[3].split(",")[-1]
    with h5py.File(result) as f:
        assert f.attrs["algorithm"] == "sgd" and len(f["iterations/step"]) == 3


@pytest.mark.parametrize("text, message", [
    (GRID.replace('seed = [0, 1]', 'seed = 0'), "must be non-empty lists"),
    (GRID.replace('steps = 3', 'stepz = 3'), "unrecognized arguments"),
    (GRID.replace('"sgd"]', '"nope"]'), "invalid choice: 'nope'"),
    (GRID.replace('ranks = 3', 'ranks = 1'), "ranks must be >= 2"),
    ("grid = [", "is not valid TOML"),
])
def test_bad_grids_are_one_line_errors(text, message, tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    assert sweep.main([str(grid), "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
