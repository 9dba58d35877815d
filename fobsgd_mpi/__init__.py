"""fobsgd_mpi: MPI harness and benchmark for communication-compressed distributed SGD."""
__version__ = "0.1.0"
