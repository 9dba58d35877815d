"""The training harness under real mpirun jobs (n = 2..5, oversubscribed on 2 cores)."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from fobsgd_mpi import algorithms, compressors, data, models
from fobsgd_mpi import train as train_cli
from fobsgd_mpi.results import EVAL_FIELDS, ITERATION_FIELDS

from .mpi_helpers import ROOT, job_env, mpirun, train_runs

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def three_rank_runs(tmp_path_factory):
    """The runs of this module's 3-rank tests, in one job (fobsgd_mpi.batch): {name: Run}."""
    tmp = tmp_path_factory.mktemp("three")
    (tmp / "run.toml").write_text(CONFIG_FILE)
    sparse = ["--dataset", "synthetic-sparse", "--model", "logreg", "--steps", "2000", "--batch-size", "4",
              "--lr", "0.05", "--momentum", "0", "--eval-every", "2000"]
    return train_runs(3, tmp, {
        "sgd-union": ["--algorithm", "sgd", "--dataset", "synthetic-logreg", "--model", "mlp", "--width", "16",
                      "--steps", UNION["steps"], "--batch-size", UNION["batch"], "--lr", UNION["lr"], "--momentum",
                      "0", "--lr-schedule", "constant", "--seed", "3"],
        "least-squares": ["--algorithm", "fo-sgd", "--dataset", "synthetic-quadratic", "--model", "logreg", "--steps",
                          "2000", "--batch-size", "32", "--lr", "0.005", "--momentum", "0", "--eval-every", "500"],
        "layout": ["--algorithm", "ef-sgd", "--steps", "20", "--eval-every", "10"],
        "config-file": ["--config", tmp / "run.toml", "--lr", "0.01"],
        "min-compress": ["--algorithm", "fo-sgd", "--dataset", "digits", "--model", "mlp", "--width", "64",
                         "--steps", "4", "--min-compress-numel", "1000"],
        "fresh-rotation": ["--algorithm", "fo-sgd", "--downlink", "fresh-rotation", "--steps", "20",
                           "--check-every", "10"],
        "sparse-fo-sgd": ["--algorithm", "fo-sgd", "--lambda-rule", "min", "--worker-scale", "eta", *sparse],
        "sparse-dithered-sign": ["--algorithm", "dithered-sign", "--worker-scale", "eta", *sparse],
        "save-model": ["--dataset", "synthetic-logreg", "--model", "mlp", "--width", "16", "--steps", "4",
                       "--save-model", tmp / "m.pt"],
    })


@pytest.fixture(scope="module")
def four_rank_runs(tmp_path_factory):
    """The runs of this module's 4-rank tests, in one job: {name: Run}."""
    runs = {
        "replicas": ["--algorithm", "fo-sgd", "--steps", "20", "--check-every", "10"],
        "liec-replicas": ["--algorithm", "liec-sgd", "--steps", "24", "--liec-period", "8", "--check-every", "8",
                          "--momentum", "0"],  # each rank's own momentum would keep them apart
        "liec-average": ["--algorithm", "liec-sgd", "--dataset", "synthetic-logreg", "--model", "mlp", "--width",
                         "32", "--steps", "20", "--liec-period", "8", "--eval-every", "5", "--seed", "2"],
    }
    for algorithm, cases in SHARDED_CASES.items():
        common = ["--algorithm", algorithm, "--dataset", "synthetic-logreg", "--model", "mlp", "--width", "32",
                  "--steps", "8", "--block-size", "256", "--eval-every", "4", "--check-every", "4", "--liec-period",
                  "4"]
        if algorithm in ("ef-sgd", "doublesqueeze"):  # their per-tensor scale does not shard: the same scale for both
            common += ["--sign-scale", "block"]
        for servers, extra in cases:
            runs[sharded_name(algorithm, servers, extra)] = [*common, *extra, "--servers", servers]
    return train_runs(4, tmp_path_factory.mktemp("four"), runs)


def test_every_algorithm_runs_a_few_steps(short_run):
    algorithm, out, summary = short_run
    assert summary["steps"] == 5 and np.isfinite(summary["final_test_loss"])
    with h5py.File(out) as f:
        d = f.attrs["d"]
        up = f["iterations/bytes_up"][:]
        used = json.loads(f.attrs["compressors"])["up"]  # the options the run resolved
    alg = algorithms.get(algorithm)
    spec_up = compressors.get(alg.up_compressor, **{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in used.items()}).spec(d)
    sync = {8 * d} if algorithm == "liec-sgd" else set()  # LIEC's fp32 gradient + model average
    assert set(up.tolist()) <= {spec_up.nbytes} | sync
    resolved = {"ef-sgd": {"sign_scale": "tensor"}, "doublesqueeze": {"sign_scale": "tensor"},
                "liec-sgd": {"sign_scale": "block"},
                "fo-sgd": {"server_scale": "drive", "worker_scale": "drive"}}
    for name, value in resolved.get(algorithm, {}).items():
        assert used[name] == value
    if used.get("sign_scale") == "tensor":  # the model's weight and bias tensors, in the flat vector's order
        assert sum(used["tensor_sizes"]) == d and len(used["tensor_sizes"]) > 1


def test_model_and_dataset_pairings(tmp_path):
    pairs = [("logreg", "digits"), ("logreg", "synthetic-quadratic"), ("cnn1d", "mnist1d"), ("cnn1d", "digits")]
    train_runs(2, tmp_path, {f"{model}-{dataset}": ["--algorithm", "fo-sgd", "--dataset", dataset, "--model", model,
                                                    "--width", "16", "--steps", "3"] for model, dataset in pairs})


UNION = {"steps": 5, "batch": 8, "lr": 0.1}


def test_sgd_equals_single_process_sgd_on_the_union_batch(three_rank_runs):
    steps, batch, lr = UNION["steps"], UNION["batch"], UNION["lr"]
    with h5py.File(three_rank_runs["sgd-union"].out) as f:
        got = f["final_params"][:]
    ds = data.load("synthetic-logreg", 3)
    model = models.FlatModel(models.build("mlp", ds.n_features, 4, 16, 3))
    samplers = []
    for shard in range(2):
        idx = data.shards(ds.y_train, 2, 3)[shard]
        samplers.append(data.BatchSampler(ds.x_train[idx], ds.y_train[idx], batch, seed=(3, shard)))
    for _ in range(steps):
        xs, ys = zip(*(s.next() for s in samplers))
        model.gradient(np.concatenate(xs), np.concatenate(ys), torch.nn.functional.cross_entropy)
        model.params -= np.float32(lr) * model.grads
    np.testing.assert_allclose(got, model.params, rtol=1e-5, atol=1e-6)


def test_fo_sgd_reaches_the_least_squares_optimum(three_rank_runs):
    # 2 workers converge as 4 do (measured: 0.08 % from the optimum, test loss 0.0098, either way)
    out, summary = three_rank_runs["least-squares"][:2]
    _, _, w_hat = data.quadratic_problem(0)
    with h5py.File(out) as f:
        w = f["final_params"][:64]
    # the label noise has variance 0.01: that is the best test loss any model reaches
    assert np.linalg.norm(w - w_hat) < 0.02 * np.linalg.norm(w_hat)
    assert summary["final_test_loss"] < 0.02


def test_fo_sgd_bytes_and_bit_identical_replicas(four_rank_runs):
    """20 FO-SGD steps with a cross-rank checksum at 10 and 20: the run fails if replicas differ."""
    out = four_rank_runs["replicas"].out
    with h5py.File(out) as f:
        d = int(f.attrs["d"])
        assert set(f["iterations/bytes_up"][:]) == {compressors.get("fo1bit").payload_nbytes(d)}
        assert 8 * f["iterations/bytes_up"][0] / d <= 1.01
        assert 8 * f["iterations/bytes_down"][0] / d <= 1.01


def test_hdf5_layout_matches_the_summary(three_rank_runs):
    out, summary = three_rank_runs["layout"][:2]
    with h5py.File(out) as f:
        for key in ("algorithm", "config", "seed", "n_workers", "d", "git_commit", "versions", "start_time",
                    "end_time"):
            assert key in f.attrs, key
        assert set(f["iterations"]) == set(ITERATION_FIELDS) and set(f["evals"]) == set(EVAL_FIELDS)
        assert all("units" in f["iterations"][k].attrs for k in ITERATION_FIELDS)
        assert f["iterations/step"][:].tolist() == list(range(20))
        assert f["evals/step"][:].tolist() == [9, 19]
        assert f["evals/test_accuracy"][-1] == pytest.approx(summary["final_test_accuracy"])
        assert int(f["iterations/bytes_up"][:].sum()) == summary["bytes_up_per_worker"]
        assert f.attrs["algorithm"] == "ef-sgd" and f.attrs["n_workers"] == 2


@pytest.mark.parametrize("args, message", [
    (["--algorithm", "nope"], "invalid choice: 'nope'"),
    (["--block-size", "1000"], "--block-size must be a power of two"),
    (["--lr", "-1"], "--lr must lie in (0, "),
    (["--steps", "0"], "--steps must lie in [1, "),
    (["--eta", "2"], "--eta must lie in (0, 1)"),
    (["--config", "/nonexistent.toml"], "does not exist"),
    (["--momentum", "1.5"], "--momentum must lie in [0, 1)"),
    (["--liec-period", "0"], "--liec-period must lie in [1, "),
    (["--width", "0"], "--width must lie in [1, "),
    (["--checkpoint-every", "-1"], "--checkpoint-every must lie in [0, "),
    (["--partition", "weird"], "invalid choice: 'weird'"),
    (["--topk-ratio", "0"], "--topk-ratio must lie in (0, 1]"),
    (["--resume", "--steps", "2"], "no run to continue"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    """Refused before MPI starts, so main() runs in this process (test_config runs such errors under
    mpirun, where rank 0 alone prints them)."""
    assert train_cli.main(["--quiet", "--out", str(tmp_path / "x.h5"), *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors and message in errors[0], errors
    assert not (tmp_path / "x.h5").exists()


def test_bad_toml_and_unknown_keys(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = [oops")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('algorithm = "sgd"\nnot_an_option = 1\n')
    for cfg, message in ((bad, "not valid TOML"), (unknown, "unknown option(s) not_an_option")):
        assert train_cli.main(["--config", str(cfg)]) == 2
        assert message in capsys.readouterr().err


CONFIG_FILE = 'algorithm = "signsgd-mv"\ndataset = "digits"\nmodel = "logreg"\nsteps = 4\nlr = 0.5\n'


def test_config_file_with_flag_override(three_rank_runs):
    out, summary = three_rank_runs["config-file"][:2]
    with h5py.File(out) as f:
        stored = json.loads(f.attrs["config"])
    assert stored["algorithm"] == "signsgd-mv" and stored["lr"] == 0.01 and summary["steps"] == 4


def test_single_process_start_is_an_error_not_a_fallback():
    done = subprocess.run([sys.executable, "-m", "fobsgd_mpi.train", "--steps", "1"], capture_output=True, text=True,
                          env=job_env(), cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert "needs at least 2 ranks" in done.stderr


def test_unwritable_output_is_a_clear_error(tmp_path):
    done = mpirun(2, "fobsgd_mpi.train", "--out", "/proc/no/such/run.h5", "--steps", "1")
    assert done.returncode != 0
    assert any(line.startswith("error") and "/proc/no/such" in line for line in done.stderr.splitlines())


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "taken.h5").write_bytes(b"keep me")
    done = mpirun(2, "fobsgd_mpi.train", "--out", tmp_path / "taken.h5", "--steps", "1")
    assert done.returncode == 2 and "--overwrite" in done.stderr
    assert (tmp_path / "taken.h5").read_bytes() == b"keep me"


def test_min_compress_numel_sends_small_tensors_in_fp32(three_rank_runs):
    out = three_rank_runs["min-compress"].out
    with h5py.File(out) as f:
        d = int(f.attrs["d"])
        up = set(f["iterations/bytes_up"][:].tolist())
    # mlp 64-64-64-10: weights 4096 + 4096 compressed; the 640-weight head and biases 64 + 64 + 10 fp32
    big, small = 4096 + 4096, 640 + 138
    assert d == big + small
    assert up == {compressors.get("fo1bit").payload_nbytes(big) + 4 * small}


def test_fresh_downlink_rotation_runs_and_keeps_replicas_identical(three_rank_runs):
    summary = three_rank_runs["fresh-rotation"].summary
    assert np.isfinite(summary["final_test_loss"])


def test_liec_replicas_identical_right_after_averaging(four_rank_runs):
    """The checksum runs only at averaging steps here (check period = H) and must pass; between
    averages the replicas differ, which the spread records."""
    with h5py.File(four_rank_runs["liec-replicas"].out) as f:
        spread = f["iterations/replica_spread"][:]
    assert (spread[[7, 15, 23]] > 0).all()  # the models had drifted apart before each average


def test_dithered_sign_is_worse_than_fo_sgd_on_sparse_gradients(three_rank_runs):
    """One-hot features, 4 samples a worker: at most 4 of 513 gradient coordinates are non-zero.
    Measured: fo-sgd (min rule) 0.69 test loss, as fp32 sgd; dithered-sign 1.75. Both with the
    unbiased eta scale, the quantizer flattening is for: with --worker-scale mse-debias (clipping
    instead of dither spread) the gap shrank to 0.62 against 1.01."""
    fo, ds = three_rank_runs["sparse-fo-sgd"].summary, three_rank_runs["sparse-dithered-sign"].summary
    assert ds["final_test_loss"] > 2 * fo["final_test_loss"], (fo["final_test_loss"], ds["final_test_loss"])


SHARDED_CASES = {algorithm: [("1", ()), ("all", ())] for algorithm in ("sgd", "signsgd-mv", "ef-sgd", "doublesqueeze",
                                                                        "liec-sgd")}
SHARDED_CASES["fo-sgd"] = [("1", ()), ("all", ()), ("2", ()), ("1", ("--server-also-works",)),
                           ("all", ("--server-also-works",))]


def sharded_name(algorithm, servers, extra):
    return f"sharded-{algorithm}-{servers}{''.join(extra)}"


@pytest.mark.parametrize("algorithm", SHARDED_CASES)
def test_sharded_server_gives_the_same_model_as_one_server(algorithm, four_rank_runs):
    """--servers all on 4 ranks (Alltoallw of uneven block shards, the last one padded: d = 2,244 in
    blocks of 256) updates the model bit for bit as rank 0 alone does; each worker still sends one payload.
    FO-SGD also with --servers 2, and with rank 0 computing a gradient too."""
    cases = SHARDED_CASES[algorithm]
    runs = {(k, extra): four_rank_runs[sharded_name(algorithm, k, extra)] for k, extra in cases}
    params = {}
    for key, (out, summary, _, _) in runs.items():
        with h5py.File(out) as f:
            params[key] = f["final_params"][:]
            assert f.attrs["d"] == 2244
        assert summary["bytes_up_per_worker"] == runs["1", ()].summary["bytes_up_per_worker"]
    for k, extra in cases:
        assert np.array_equal(params[k, extra], params["1", extra]), (k, extra)


def test_servers_flag_is_checked(tmp_path):
    for bad, why in ((["--algorithm", "qsgd", "--servers", "2"], "cannot"), (["--servers", "0"], "--servers"),
                     (["--servers", "all", "--participation", "0.5"], "participation"),
                     (["--algorithm", "ef-sgd", "--servers", "2", "--sign-scale", "tensor"], "--sign-scale block")):
        done = mpirun(3, "fobsgd_mpi.train", "--out", tmp_path / "x.h5", *bad, timeout=120)
        assert done.returncode == 2 and why in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_liec_evaluates_and_ends_on_the_average_model(four_rank_runs):
    """A run of 20 steps with H = 8 ends between averages: the last evaluation is of the worker
    average (a measurement, not counted), and the run ends with one more average that is counted
    (4 d bytes each way) and leaves that average as the final model."""
    out, summary = four_rank_runs["liec-average"][:2]
    with h5py.File(out) as f:
        d, rows, params = int(f.attrs["d"]), f["iterations/bytes_up"][:].sum(), f["final_params"][:]
        acc = f["evals/test_accuracy"][-1]
    assert summary["bytes_up_per_worker"] == rows + 4 * d and summary["bytes_down_per_worker"] == rows + 4 * d
    ds = data.load("synthetic-logreg", 2)
    model = models.FlatModel(models.build("mlp", ds.n_features, 4, 32, 2))
    model.params[:] = params
    _, final_acc = models.evaluate(model.module, ds.x_test, ds.y_test, torch.nn.functional.cross_entropy, 4)
    assert final_acc == acc  # the last evaluation saw exactly the model the run hands over


def test_progress_lines_under_mpirun_and_quiet_silences_them(tmp_path):
    """mpirun's stderr is a pipe, where tqdm draws nothing: rank 0 prints progress lines instead."""
    common = ["--dataset", "synthetic-logreg", "--model", "logreg", "--steps", "6", "--eval-every", "3"]
    done = mpirun(3, "fobsgd_mpi.train", "--out", tmp_path / "a.h5", "--log-every", "0", *common, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == [f"{k}/6" for k in range(1, 7)]
    for field in ("it/s", "samples/s", "loss", "test acc", "MB up", "down", "ETA"):
        assert field in lines[-1]
    quiet = mpirun(3, "fobsgd_mpi.train", "--out", tmp_path / "b.h5", "--log-every", "0", "--quiet", *common,
                   timeout=240)
    assert quiet.returncode == 0 and "step " not in quiet.stderr


def test_save_model_writes_a_plain_state_dict_of_the_final_model(three_rank_runs):
    out = three_rank_runs["save-model"].out
    with h5py.File(out) as f:
        final = f["final_params"][:]
    state = torch.load(out.parent / "m.pt", weights_only=True)
    ds = data.load("synthetic-logreg", 0)
    module = models.build("mlp", ds.n_features, ds.n_classes or ds.y_train.shape[1], 16, 0)
    module.load_state_dict(state)
    np.testing.assert_array_equal(np.concatenate([p.detach().reshape(-1).numpy() for p in module.parameters()]),
                                  final)
