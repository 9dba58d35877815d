"""benchmarks/convergence.py on a tiny protocol: the table it writes, and a second invocation on the
same --workdir that reruns only the runs that are missing."""
import h5py
import numpy as np
import pytest

from .test_plots import benchmark

pytestmark = pytest.mark.mpi

TINY = ["--workers", "2", "--epochs", "0.2", "--models", "mlp", "--settings", "iid", "--lr-factors", "0.5", "1",
        "--grid-extensions", "1", "--seeds", "2", "--algorithms", "sgd", "fo-sgd"]


@pytest.mark.parametrize("tried, beyond", [
    ({0.5: 0.3, 1: 0.4, 2: 0.5}, 4), ({0.5: 0.5, 1: 0.4, 2: 0.3}, 0.25), ({0.5: 0.3, 1: 0.5, 2: 0.4}, None),
    ({0.5: 0.3, 1: 0.5, 2: float("nan")}, None), ({0.5: 0.3, 1: float("nan")}, 0.25),
    ({0.5: float("nan"), 1: float("nan")}, None),
])
def test_the_grid_grows_past_an_end_only_where_the_best_lies(tried, beyond):
    assert benchmark("convergence").beyond_the_edge(tried) == beyond


@pytest.mark.parametrize("refused_seeds, used, refused, n_jobs", [
    (set(), [0, 1, 2], [], 1), ({2}, [0, 1, 3], [2], 2), ({1, 3}, [0, 2, 4], [1, 3], 3),
    ({0, 1, 2, 3, 4, 5}, [], [0, 1, 2, 3, 4, 5], 2),  # at most --seeds replacements
])
def test_a_refused_seed_is_replaced_by_the_next(refused_seeds, used, refused, n_jobs, tmp_path, monkeypatch):
    convergence = benchmark("convergence")
    jobs = []

    def fake_train_all(workdir, args, planned, name):
        jobs.append(name)
        seeds = [int(flags[flags.index("--seed") + 1]) for _, flags in planned]
        return [{"error": "--batch-size 32 exceeds ...", "refused": True} if s in refused_seeds else
                {"accuracy": 0.5 + s / 100} for s in seeds]

    monkeypatch.setattr(convergence, "train_all", fake_train_all)
    args = convergence.parser().parse_args(["--seeds", "3", "--workdir", str(tmp_path)])
    args.dataset = "mnist1d"
    got_used, got_refused = convergence.train_seeds(str(tmp_path), args, {"sgd": 0.1, "fo-sgd": 0.02}, "mlp",
                                                    "dirichlet")
    for a in ("sgd", "fo-sgd"):
        assert [s for s, _, _ in got_used[a]] == used and [s for s, _ in got_refused[a]] == refused
        assert [run["accuracy"] for _, _, run in got_used[a]] == [0.5 + s / 100 for s in used]
    assert len(jobs) == n_jobs


def table(path):
    with h5py.File(path) as f:
        g = f["convergence"]
        return {k: g[k][:] for k in g}


def test_the_protocol_tunes_on_validation_and_a_second_run_repeats_only_what_is_missing(tmp_path, monkeypatch):
    convergence = benchmark("convergence")
    workdir = tmp_path / "runs"
    convergence.main([*TINY, "--workdir", str(workdir), "--out", str(tmp_path / "first.h5")])
    first = table(tmp_path / "first.h5")
    assert [a.decode() for a in first["algorithm"]] == ["sgd", "fo-sgd"] and not any(first["error"])
    assert (first["accuracy"] > 0.1).all() and first["acc_gap_pp"][0] == 0
    assert first["fewer_bytes_up"][1] > 25  # one bit a coordinate against 32
    tried = [[float(t.split(":")[0]) for t in v.decode().split()] for v in first["validation"]]
    for factors, lr, name in zip(tried, first["lr"], ["sgd", "fo-sgd"]):  # an end that wins gets one more
        assert factors in ([0.5, 1], [0.25, 0.5, 1], [0.5, 1, 2]), factors
        assert lr / convergence.algorithms.get(name).default_lr in factors
    assert {v.decode() for v in first["grid_end"]} <= {"yes", "no"}
    assert len(list(workdir.glob("tune-*.h5"))) == sum(map(len, tried)) and len(list(workdir.glob("final-*.h5"))) == 4
    for png in ("first-accuracy-bytes.png", "first-mlp-iid-accuracy.png"):
        assert (tmp_path / png).stat().st_size > 0

    tuned = benchmark("time_to_accuracy").tuned_rates(tmp_path / "first.h5")
    assert tuned == dict(zip(["sgd", "fo-sgd"], first["lr"])) and tuned["fo-sgd"] / convergence.algorithms.get("fo-sgd").default_lr in (0.25, 0.5, 1, 2)

    batches = []
    real_batch = convergence.mpirun_batch
    monkeypatch.setattr(convergence, "mpirun_batch", lambda n, runs, *a, **k: batches.append(runs) or
                        real_batch(n, runs, *a, **k))
    dropped = sorted(workdir.glob("final-fo-sgd-*-s1.h5"))
    assert len(dropped) == 1
    with h5py.File(dropped[0], "r+") as f:  # as a run cut short leaves it
        del f.attrs["status"]
    convergence.main([*TINY, "--workdir", str(workdir), "--out", str(tmp_path / "second.h5")])
    assert len(batches) == 1 and len(batches[0]) == 1 and str(dropped[0]) in batches[0][0]
    second = table(tmp_path / "second.h5")
    for key in ("lr", "accuracy", "accuracy_std", "bytes_up", "bytes_down"):
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@pytest.mark.parametrize("text, problem", [("--lr 0.1", "set by the protocol"), ("--worker-scale drive --seed=3", "set by the protocol"),
                                           ("--worker-scale median", "train refuses")])
def test_train_flags_are_checked_as_train_checks_them(text, problem, capsys):
    with pytest.raises(SystemExit) as exc:
        benchmark("convergence").parser().parse_args(["--train-flags", text])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and problem in err and err.count("\n") == 1, err


def test_train_flags_reach_every_run_and_name_its_file(tmp_path):
    convergence = benchmark("convergence")
    plain = convergence.parser().parse_args([])
    drive = convergence.parser().parse_args(["--train-flags", "--worker-scale drive --server-scale drive"])
    out, flags = convergence.planned_run(str(tmp_path), plain, "mnist1d", "fo-sgd", "mlp", "iid", 0.1, 0, "tune")
    out_drive, flags_drive = convergence.planned_run(str(tmp_path), drive, "mnist1d", "fo-sgd", "mlp", "iid", 0.1, 0,
                                                     "tune")
    assert out != out_drive and "--worker-scale" not in flags
    assert flags_drive[-4:] == ["--worker-scale", "drive", "--server-scale", "drive"]
