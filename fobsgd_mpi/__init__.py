"""fobsgd_mpi: MPI harness and benchmark for communication-compressed distributed SGD."""
__version__ = "0.1.0"

# the Python API (api.py), imported on first use so that `import fobsgd_mpi` stays light
API = ("init", "DistributedOptimizer", "is_server", "serve", "log", "shutdown", "rank", "size", "steps_done",
       "local_device")


def __getattr__(name):
    if name in API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'fobsgd_mpi' has no attribute {name!r}")
