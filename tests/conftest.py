import numpy as np
import pytest

from fobsgd_mpi import native


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
