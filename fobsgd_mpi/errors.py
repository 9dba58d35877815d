"""Exceptions the package raises on purpose (each message says what to do), and exit statuses."""

EXIT_USAGE = 2  # a setting is wrong: fix the command line or config file
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


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
