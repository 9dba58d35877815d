"""Per-rank checkpoints: everything a rank needs to continue bit for bit.

Each rank writes <out>.ckpt/rank<r>.npz.tmp; only when every rank has written its own do they all
rename them over the previous checkpoint, so a failed write (a crash, a full disk) on any rank
leaves the previous checkpoint whole. Compression randomness needs no saving: every stream is a
function of (seed, step, block, rank).
"""
import json
import os
import zipfile

import numpy as np

# options a resumed run may change: how far it runs, how often it evaluates, checks and saves,
# and how it reports; every other option (and the number of ranks) must match the checkpoint's
MAY_CHANGE_ON_RESUME = frozenset({"steps", "epochs", "stop_at", "eval_every", "checkpoint_every", "check_every",
                                  "target_accuracy", "quiet", "log_every", "save_model", "out", "overwrite", "resume",
                                  "config", "device", "codec", "cuda_aware_mpi", "mpi_collectives"})


def directory(out):
    return out + ".ckpt"


def _path(out, rank):
    return os.path.join(directory(out), f"rank{rank}.npz")


def write(out, rank, arrays, meta):
    """Write this rank's next checkpoint beside the current one (commit() puts it in place).
    arrays: name -> ndarray; meta: JSON-able dict (step, counters, sampler state, ...)."""
    os.makedirs(directory(out), exist_ok=True)
    tmp = _path(out, rank) + ".tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        discard(out, rank)
        raise


def commit(out, rank):
    os.replace(_path(out, rank) + ".tmp", _path(out, rank))


def discard(out, rank):
    try:
        os.remove(_path(out, rank) + ".tmp")
    except FileNotFoundError:
        pass


def load(out, rank):
    """(arrays, meta) of this rank's checkpoint; FileNotFoundError with advice if there is none,
    ValueError if it is damaged."""
    return _read(out, rank, lambda f: ({k: f[k] for k in f.files if k != "__meta__"}, _meta(f)))


def load_meta(out, rank):
    return _read(out, rank, _meta)


def _meta(f):
    return json.loads(bytes(f["__meta__"]).decode())


def _read(out, rank, what):
    path = _path(out, rank)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint {path} to resume from; run with --checkpoint-every first, "
                                "with the same --out and the same number of ranks")
    try:
        with np.load(path) as f:
            return what(f)
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError) as exc:  # truncated, or not ours
        raise ValueError(f"checkpoint {path} is damaged ({type(exc).__name__}: {exc}); restore it, or start "
                         "afresh with another --out (or --overwrite, which replaces the results)") from None


def mismatch(saved, current):
    """The options (dicts as the checkpoints' "run") that differ and may not: sorted names."""
    return sorted(k for k in saved.keys() | current.keys()
                  if k not in MAY_CHANGE_ON_RESUME and saved.get(k) != current.get(k))


def save_all(comm, out, step, arrays, meta):
    """Collective: every rank writes its checkpoint of `step`, and only if all succeeded do they
    replace the last one; JobError (the previous checkpoint intact) if any rank could not."""
    from .errors import JobError
    rank = comm.Get_rank()
    try:
        write(out, rank, arrays, meta)
        problem = None
    except OSError as exc:
        problem = f"rank {rank}: {exc.strerror or exc}"
    problems = [p for p in comm.allgather(problem) if p]
    if problems:
        discard(out, rank)
        raise JobError(f"cannot write the checkpoint of step {step} in {directory(out)} "
                       f"({'; '.join(problems)}); the previous checkpoint is intact: free space, then --resume")
    commit(out, rank)
    comm.Barrier()


def load_all(comm, out, d):
    """Collective: (arrays, meta) of this rank's checkpoint, after checking that every rank has one of
    the same step for a model of `d` parameters; UsageError (a --resume that cannot be honoured,
    exit 2 as the other resume refusals) naming the first problem."""
    from .errors import UsageError
    rank = comm.Get_rank()
    arrays, meta, problem = {}, {"step": None}, None
    try:
        arrays, meta = load(out, rank)
        if arrays["params"].shape != (d,):
            problem = f"rank {rank}'s checkpoint holds {arrays['params'].size} parameters, this model {d}"
    except (OSError, ValueError) as exc:
        problem = str(exc)
    problems = [p for p in comm.allgather(problem) if p]
    if problems:
        raise UsageError(f"cannot resume: {problems[0]}")
    steps = comm.allgather(meta["step"])
    if len(set(steps)) != 1:
        raise UsageError(f"checkpoints of different steps {steps} in {directory(out)}; "
                       "a checkpoint write was interrupted - restart without --resume")
    return arrays, meta


def prefixed(arrays, prefix):
    """The arrays whose names start with `prefix.`, without it."""
    return {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + ".")}
