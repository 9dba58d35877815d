"""Regression tests for the bad inputs systematic probing found (issue 12 §3): each ended in a
traceback, a second line, a silent default or a run that started anyway. Each must now end in
one line naming the problem, with exit status 2, before any work starts."""
import json

import h5py
import numpy as np
import pytest

from fobsgd_mpi import checkpoint, config, ddp, launch, launcher_env, report, results, sweep, train
from fobsgd_mpi.errors import UsageError

from .test_plots import benchmark, tiny_run


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/r.h5", "--resume", "--overwrite"], "pass one of them"),
    (["--out", "{tmp}/r.h5", "--save-model", "{tmp}/./r.h5"], "the model would overwrite the results"),
    (["--dataset", "synthetic-quadratic", "--target-accuracy", "0.5"], "synthetic-quadratic is a regression"),
    (["--out", ""], "--out is an empty path"),
    (["--config", ""], "--config is an empty path"),
])
def test_options_that_cannot_work_together_or_as_paths_are_refused_before_mpi(args, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        config.parse_config([a.format(tmp=tmp_path) for a in args])


def test_save_model_through_a_link_to_the_out_folder_is_refused(tmp_path):
    (tmp_path / "here").symlink_to(tmp_path)
    with pytest.raises(UsageError, match="the model would overwrite the results"):
        config.parse_config(["--out", str(tmp_path / "r.h5"), "--save-model", str(tmp_path / "here" / "r.h5")])


def test_an_existing_save_model_file_is_kept_without_overwrite(tmp_path, capsys):
    kept = tmp_path / "another-run.h5"
    kept.write_bytes(b"a result")
    assert train.main(["--out", str(tmp_path / "r.h5"), "--save-model", str(kept)]) == 2
    assert f"{kept} exists; pass --overwrite or choose another --save-model" in one_line_error(capsys)
    assert kept.read_bytes() == b"a result"


@pytest.mark.parametrize("flag", ["--out", "--save-model"])
def test_a_folder_as_output_is_refused_before_mpi(flag, tmp_path, capsys):
    assert train.main([flag, str(tmp_path)]) == 2
    assert f"{flag} {tmp_path} is a folder; give a file name in it" in one_line_error(capsys)


def test_the_ddp_peer_refuses_a_folder_as_out_before_it_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PMI_RANK", "0")  # as under mpirun: ddp reads its rank from the launcher
    monkeypatch.setenv("PMI_SIZE", "2")
    assert ddp.main(["--out", str(tmp_path), "--steps", "3"]) == 2
    assert "is a folder; give a file name in it" in one_line_error(capsys)


@pytest.mark.parametrize("variable", ["PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"])
@pytest.mark.parametrize("value", ["abc", ""])
def test_a_launcher_variable_that_is_not_a_number_is_passed_over(variable, value, monkeypatch):
    for key, _ in launcher_env.LAUNCHER_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(variable, value)
    assert launcher_env.rank_from_environment() == 0


GRID = 'name = "g"\nranks = 3\n[grid]\nlr = [0.1]\n'


@pytest.mark.parametrize("text, message", [
    (GRID.replace("ranks = 3", "rank = 3"), "unknown key(s) rank"),
    (GRID.replace("ranks = 3", "ranks = [3]"), "ranks must be an integer, got [3]"),
    (GRID.replace("ranks = 3", "ranks = 2.7"), "ranks must be an integer, got 2.7"),
    (GRID.replace("ranks = 3", 'ranks = 3\ntime = 5'), "time must be a string"),
    ('name = "g"\nranks = 3\ngrid = 3\n', "grid must be a table of lists"),
    (GRID.replace('"g"', '"../g"'), "cannot hold a /"),
    (GRID + "[fixed]\nwidth = [8, 16]\n", "[fixed] values must be single values"),
    (GRID + '[fixed]\nsave_model = "m.pt"\n', "[fixed] save_model: every task would write the same model file"),
    (GRID + "[fixed]\nresume = true\n", "[fixed] resume: every task starts its own run"),
    (GRID.replace("ranks = 3", "ranks = 1000000000"), "ranks must lie in [2, 1048576]"),
    (GRID.replace("ranks = 3", 'ranks = 3\ntime = "banana"'), 'time must be a wall-time limit like "01:00:00"'),
    # what only the number of ranks decides, refused as the job would refuse it
    (GRID + "servers = [1, 4]\n", "task 1 ({'lr': 0.1, 'servers': 4}): --servers must be 1..3 (the number of ranks)"),
    (GRID + "batch_size = [3000]\n[fixed]\ndataset = \"synthetic-logreg\"\n",
     "--batch-size 3000 exceeds the 2500 training samples of worker rank 1 (2 workers share 5000)"),
    (GRID + "[fixed]\nslow_ranks = \"3:2\"\n", "--slow-ranks names rank(s) [3], which are not workers (workers: 1..2)"),
])
def test_grid_files_of_the_wrong_shape_are_one_line_errors(text, message, tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(text)
    assert sweep.main([str(grid), "--out-dir", str(tmp_path / "o")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_a_sweep_already_in_out_dir_is_kept_without_overwrite(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    assert sweep.main([str(grid), "--out-dir", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    (tmp_path / "o" / "jobs.txt").write_text("the first sweep\n")
    assert sweep.main([str(grid), "--out-dir", str(tmp_path / "o")]) == 2
    assert "holds a sweep already (jobs.txt); pass --overwrite" in one_line_error(capsys)
    assert (tmp_path / "o" / "jobs.txt").read_text() == "the first sweep\n"
    assert sweep.main([str(grid), "--out-dir", str(tmp_path / "o"), "--overwrite"]) == 0


def test_a_grid_folder_and_an_out_dir_under_a_file_are_one_line_errors(tmp_path, capsys):
    assert sweep.main([str(tmp_path)]) == 2
    assert "cannot be read" in one_line_error(capsys)
    grid, blocker = tmp_path / "grid.toml", tmp_path / "file"
    grid.write_text(GRID)
    blocker.write_text("")
    assert sweep.main([str(grid), "--out-dir", str(blocker / "o")]) == 2
    assert "choose a writable --out-dir" in one_line_error(capsys)


def test_report_refuses_what_is_not_a_run_in_one_line(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "no such run file" in one_line_error(capsys)
    with h5py.File(tmp_path / "odd.h5", "w") as f:
        f.create_group("evals")
        f.attrs["config"] = "{not json"
    assert report.main([str(tmp_path / "odd.h5")]) == 2
    assert "is not a fobsgd_mpi run file" in one_line_error(capsys)
    (tmp_path / "text.h5").write_text("not HDF5\n")
    assert report.main([str(tmp_path / "text.h5")]) == 2
    one_line_error(capsys)
    assert report.main([]) == 2
    assert "required: runs" in one_line_error(capsys)


def test_report_on_an_unwritable_prefix_is_one_line(tmp_path, capsys):
    run = tiny_run(tmp_path / "fo.h5", "fo-sgd", 0.01)
    (tmp_path / "file").write_text("")
    assert report.main([str(run), "--out", str(tmp_path / "file" / "r")]) == 2
    assert "choose a writable --out" in one_line_error(capsys)


def test_a_modelled_run_without_a_rate_is_labelled_unshaped():
    profile = json.dumps({"topology": "per-node", "rate_bps": None, "modelled_only": True})
    assert report.link_label(profile) == "unshaped links"


def test_launch_refuses_a_model_without_a_rate_and_names_a_missing_mpirun(monkeypatch, capsys):
    assert launch.main(["-n", "2", "--model-network", "--", "true"]) == 2
    assert "give the rate to model" in one_line_error(capsys)
    monkeypatch.setenv("MPIRUN", "/nonexistent/mpirun")
    assert launch.main(["-n", "2", "--model-network", "--bandwidth", "1gbit", "--", "true"]) == 1
    assert "/nonexistent/mpirun not found; install MPI (MPICH), or set MPIRUN" in one_line_error(capsys)


@pytest.mark.parametrize("script, args, message", [
    ("convergence", ["--workers", "0"], "--workers: must lie in [1, 1023], got 0"),
    ("convergence", ["--algorithms", "nope"], "invalid choice: 'nope'"),
    ("convergence", ["--grid-extensions", "11"], "--grid-extensions: must lie in [0, 10], got 11"),
    ("server_scaling", ["--steps", "0"], "--steps: must lie in"),
    ("exchange_scaling", ["--bandwidth", "fast"], "expected a rate like 100mbit"),
    ("exchange_scaling", ["--block-size", "100"], "must be a power of two"),
    ("fo_sgd_variance", ["--repeats", "1"], "--repeats: must lie in [2,"),
    ("fo_sgd_variance", ["--d", "0"], "--d: must lie in [1,"),
    ("time_to_accuracy", ["--target", "2"], "--target: must lie in (0, 1]"),
    ("time_to_accuracy", ["--algorithms", "fo-sgd@0"], "must be a number of ranks >= 1 or all"),
    ("time_to_accuracy", ["--tuned", "README.md"], "README.md is not a table of benchmarks/convergence.py"),
    ("bandwidth_sweep", ["--bandwidths", "xyz"], "expected a rate like 100mbit"),
    ("bandwidth_sweep", ["--ranks", "1"], "--ranks: must lie in [2, 1024]"),
    ("synthetic_throughput", ["--bandwidths", "fast"], "expected a rate like 100mbit"),
    ("synthetic_throughput", ["--workers", "0"], "--workers: must lie in [1, 1024]"),
    ("synthetic_throughput", ["--steps", "2"], "--steps: must lie in"),
    ("synthetic_throughput", ["--algorithms", "ddp-nope"], "invalid choice: 'ddp-nope'"),
    ("synthetic_throughput", ["--models", "torchvision:nosuchmodel"], "names no torchvision classification model"),
    ("fwht", ["--min-log", "12", "--max-log", "10"], "--min-log 12 is above --max-log 10"),
    ("fwht", ["--repeats", "0"], "--repeats: must lie in [1,"),
    ("codec", ["--sizes", "0"], "--sizes: must lie in [1,"),
    ("codec", ["--device", "cuda:99"], "--device cuda:99"),
    *((script, ["--out", "/proc/version/r.h5"], "cannot create the folder of --out /proc/version/r.h5")
      for script in ("codec", "fwht", "convergence", "time_to_accuracy", "bandwidth_sweep", "exchange_scaling",
                     "synthetic_throughput")),
])
def test_benchmark_flags_are_checked_before_any_run(script, args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        benchmark(script).main(args)
    assert exit_.value.code == 2
    assert message in one_line_error(capsys)


@pytest.mark.parametrize("damage", [lambda raw: raw[:200], lambda raw: b"not a checkpoint"])
def test_a_damaged_checkpoint_is_a_value_error_with_advice(damage, tmp_path):
    out = str(tmp_path / "run.h5")
    checkpoint.write(out, 1, {"params": np.arange(1000, dtype=np.float32)}, {"step": 3})
    checkpoint.commit(out, 1)
    path = tmp_path / "run.h5.ckpt" / "rank1.npz"
    assert checkpoint.load(out, 1)[1] == {"step": 3}
    path.write_bytes(damage(path.read_bytes()))
    for read in (checkpoint.load, checkpoint.load_meta):
        with pytest.raises(ValueError, match="rank1.npz is damaged .*restore it, or start afresh"):
            read(out, 1)


def test_resume_refuses_an_hdf5_file_that_is_not_a_run_before_anything_changes(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["iterations/step"] = np.arange(3)
    with pytest.raises(ValueError, match=r"^--resume: .*other.h5 is not a results file of fobsgd_mpi \(it lacks "
                                         r"iterations/wall_s, iterations/compute_s, iterations/encode_s\); restore it"):
        results.check_resumable(str(other))
    with h5py.File(other) as f:
        assert list(f) == ["iterations"] and list(f["iterations"]) == ["step"]


def test_an_out_in_a_folder_that_takes_no_files_is_one_line():
    """/proc passes the writable-folder check as root, then refuses every new file."""
    with pytest.raises(results.ResultsError) as refused:
        results.OutputLock("/proc/run.h5")
    assert str(refused.value) == ("cannot create the lock file /proc/run.h5.lock beside --out (No such file or "
                                  "directory); choose a writable --out")
