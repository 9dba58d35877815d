"""benchmarks/*.py loaded as modules for the tests (benchmarks/ is not a package)."""
import importlib.util

from fobsgd_mpi.jobs import ROOT


def benchmark(name):
    """benchmarks/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
