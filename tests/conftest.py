import numpy as np
import pytest

from fobsgd_mpi import algorithms, native

from .mpi_helpers import train


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


@pytest.fixture(scope="session", params=algorithms.names())
def short_run(request, tmp_path_factory):
    """One short run of each algorithm, 3 ranks, shared by the tests that check different properties
    of it (test_train_mpi, test_accounting_mpi): (algorithm, results file, printed summary). 5 steps
    with --liec-period 3: LIEC-SGD averages once inside the rows and once more after the last row."""
    algorithm = request.param
    out, summary = train(3, tmp_path_factory.mktemp(algorithm), "--algorithm", algorithm, "--dataset",
                         "synthetic-logreg", "--model", "mlp", "--width", "32", "--steps", "5", "--eval-every", "3",
                         "--liec-period", "3", "--check-every", "3", "--batch-size", "16")
    return algorithm, out, summary
