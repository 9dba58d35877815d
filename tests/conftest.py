import h5py
import numpy as np
import pytest

from fobsgd_mpi import algorithms, native

from .mpi_helpers import train_runs


@pytest.fixture(params=native.supported_isas() or ["numpy"])
def isa(request):
    """Runs a test once per instruction set this CPU offers (AVX-512, AVX2, generic)."""
    if request.param != "numpy":
        native.set_isa(request.param)
    yield request.param
    if native.available():
        native.set_isa(None)


@pytest.fixture
def gen():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def short_runs(tmp_path_factory):
    """One short run of each algorithm, 3 ranks, all in one job, shared by the tests that check
    different properties of them (test_train_mpi, test_accounting_mpi): {algorithm: Run}. 5 steps
    with --liec-period 3: LIEC-SGD averages once inside the rows and once more after the last row."""
    common = ["--dataset", "synthetic-logreg", "--model", "mlp", "--width", "32", "--steps", "5", "--eval-every", "3",
              "--liec-period", "3", "--check-every", "3", "--batch-size", "16"]
    return train_runs(3, tmp_path_factory.mktemp("short"),
                      {algorithm: ["--algorithm", algorithm, *common] for algorithm in algorithms.names()})


@pytest.fixture(params=algorithms.names())
def short_run(request, short_runs):
    """(algorithm, results file, printed summary) of one of short_runs."""
    run = short_runs[request.param]
    return request.param, run.out, run.summary


# name: (options, the step after which the first run stops); the stop falls between LIEC averages
# (after steps 5 and 8) with every error memory non-zero, and the resume redoes the stopped run's last steps
STOP_AND_RESUME = {algorithm: (["--algorithm", algorithm, "--dataset", "digits", "--steps", "16",
                                "--checkpoint-every", "4", "--eval-every", "4", "--liec-period", "3"], 9)
                   for algorithm in ("fo-sgd", "liec-sgd", "doublesqueeze")}
# the server's and the workers' memories; the workers' must leave the replicas bit-identical (--check-every)
STOP_AND_RESUME["fo-sgd-feedback"] = ([*STOP_AND_RESUME["fo-sgd"][0], "--downlink", "feedback", "--uplink", "feedback",
                                       "--check-every", "4"], 9)
STOP_AND_RESUME["adam"] = (["--optimizer", "adam", "--lr", "0.003", "--lr-warmup-steps", "4", "--lr-schedule", "step",
                            "--algorithm", "ef-sgd", "--dataset", "digits", "--model", "logreg", "--steps", "20",
                            "--checkpoint-every", "5", "--eval-every", "5", "--check-every", "5"], 12)


@pytest.fixture(scope="session")
def stopped_and_resumed(tmp_path_factory):
    """For each STOP_AND_RESUME case, 3 ranks: an uninterrupted run and one stopped early (one job),
    then the stopped one resumed to the end in another job, so that only the checkpoint carries
    over. {name: (uninterrupted Run, stopped Run, (status, steps_done) when stopped, resumed Run)};
    the stopped and the resumed run share one file."""
    tmp = tmp_path_factory.mktemp("resume")
    first = train_runs(3, tmp, {f"{kind}-{name}": [*args, *(["--stop-at", stop] if kind == "part" else [])]
                                for name, (args, stop) in STOP_AND_RESUME.items() for kind in ("whole", "part")})
    stopped = {}
    for name in STOP_AND_RESUME:
        with h5py.File(first[f"part-{name}"].out) as f:
            stopped[name] = (f.attrs["status"], int(f.attrs["steps_done"]))
    resumed = train_runs(3, tmp, {f"part-{name}": ["--resume", *args] for name, (args, _) in STOP_AND_RESUME.items()})
    return {name: (first[f"whole-{name}"], first[f"part-{name}"], stopped[name], resumed[f"part-{name}"])
            for name in STOP_AND_RESUME}
