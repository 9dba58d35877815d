"""Job scripts: every template renders, passes `bash -n`, asks for one rank per node unless told
otherwise, ships inside the package, and its command runs here under mpirun (the scheduler itself
is not on this machine: LAUNCH replaces srun)."""
import os
import re
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


def directives(text):
    """{'--nodes': '9', 'select': '9:ncpus=1:mpiprocs=1', ...} from #SBATCH and #PBS -l lines."""
    pairs = re.findall(r"^#SBATCH (--[\w-]+)=(\S+)|^#PBS -l (\w+)=(\S+)", text, re.M)
    return {a or c: b or d for a, b, c, d in pairs}


@pytest.mark.parametrize("script", sorted(p for p in os.listdir(ROOT / "job_scripts")
                                          if p.endswith((".sbatch", ".pbs"))))
def test_static_scripts_parse_and_spread_ranks_over_nodes(script):
    path = ROOT / "job_scripts" / script
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    got = directives(path.read_text())
    if script.endswith(".sbatch"):
        assert got["--nodes"] == "9" and got["--ntasks-per-node"] == "1"
    else:
        assert got["select"] == "9:ncpus=1:mpiprocs=1" and got["place"] == "scatter"


@pytest.mark.parametrize("per_node, slurm, pbs", [
    ([], {"--nodes": "3", "--ntasks": "3", "--ntasks-per-node": "1"}, "3:ncpus=1:mpiprocs=1"),
    (["--ranks-per-node", "2"], {"--nodes": "2", "--ntasks": "3", "--ntasks-per-node": "2"}, "2:ncpus=2:mpiprocs=2"),
])
def test_sweep_asks_for_ranks_per_node(per_node, slurm, pbs, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    for scheduler, again in (("slurm", []), ("pbs", ["--overwrite"])):
        assert sweep.main([str(grid), "--scheduler", scheduler, "--out-dir", str(tmp_path), *per_node, *again]) == 0
    assert slurm.items() <= directives((tmp_path / "sweep.sbatch").read_text()).items()
    got = directives((tmp_path / "sweep.pbs").read_text())
    assert got["select"] == pbs and got["place"] == "scatter"
    assert sweep.main([str(grid), "--out-dir", str(tmp_path / "o"), "--ranks-per-node", "0"]) == 2


def test_sweep_runs_from_a_build_without_the_source_tree(tmp_path):
    """The files a wheel would carry (setup.py build_py: the packages and their package data; the
    C++ extension is left out to keep this fast, and the kernels fall back to numpy), imported
    from elsewhere, render a sweep: the templates are package data, not ../job_scripts."""
    lib = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)], cwd=ROOT, check=True,
                   capture_output=True)
    assert sorted(p.name for p in (lib / "fobsgd_mpi" / "job_templates").iterdir()) == sorted(sweep.TEMPLATES.values())
    (tmp_path / "grid.toml").write_text(GRID)
    env = dict(os.environ, PYTHONPATH=str(lib))
    where = subprocess.run([sys.executable, "-c", "import fobsgd_mpi; print(fobsgd_mpi.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True).stdout
    assert where.startswith(str(lib))
    done = subprocess.run([sys.executable, "-m", "fobsgd_mpi.sweep", "grid.toml", "--scheduler", "pbs", "--out-dir",
                           "o"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "sweep.pbs").read_text().count("mpiprocs=1") == 1


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
    (GRID.replace('ranks = 3', 'ranks = 1'), "ranks must lie in [2, "),
    ("grid = [", "is not valid TOML"),
])
def test_bad_grids_are_one_line_errors(text, message, tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    assert sweep.main([str(grid), "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
