"""Exceptions the package raises on purpose (each message says what to do), and exit statuses."""
import os
import signal
import sys

EXIT_USAGE = 2  # a setting is wrong: fix the command line or config file
EXIT_INTERRUPTED = 128 + signal.SIGINT  # Ctrl-C
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; scancel and a job's time limit


class Interrupted(KeyboardInterrupt):
    """The ranks stopped together after a stop signal: the exit status is 128 + its number, as a
    shell reports a process that signal ended (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + signum


class JobError(RuntimeError):
    """A failure every rank detects at the same point (the ranks decided it together): the job ends
    in order, rank 0 closing its results, instead of being aborted. `exit_code` is the process's
    exit status."""

    exit_code = 1


class UsageError(JobError, ValueError):
    """A setting that is wrong (a flag, a config-file value, or one that only the running job can
    judge, such as --servers above the number of ranks): one line, exit status 2. A ValueError too,
    so callers that catch bad settings as ValueError keep working."""

    exit_code = EXIT_USAGE


class NonFiniteError(ValueError):
    """A vector to be encoded holds NaN or Inf; encoding it would send garbage bits."""


def one_line(exc):
    """`exc` as "Type: first line of its message". An error raised in a DataLoader worker process is
    reported as what the worker raised (torch puts the worker's traceback in the message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 2 and lines[0].startswith("Caught ") and lines[1].startswith("Original Traceback"):
        return lines[-1]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def exit_without_finalizing(code):
    """End the process, once everything is written and closed, without tearing down the interpreter.

    Two reasons. Once DDP has used a gloo process group, torch keeps the group's worker threads
    alive past destroy_process_group; a worker that has just run a Python comm hook (fp16, PowerSGD)
    still has to take the GIL to drop the hook's closure, and if the interpreter is finalizing by
    then, Python ends that thread mid-unwind and the rank dies with "terminate called without an
    active exception". And tearing down an interpreter that imported torch costs about 1.7 s of CPU
    per process (measured: `python -c "import torch"` 4.5 s, with os._exit 2.9 s), which every
    rank of every job pays. MPI, when in use, is finalized first."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
