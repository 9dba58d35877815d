"""Per-rank checkpoints: everything a rank needs to continue bit for bit.

Each rank writes <out>.ckpt/rank<r>.npz through a temporary file and an atomic rename, so a
crash mid-write leaves the previous checkpoint intact. Compression randomness needs no saving:
every stream is a function of (seed, step, block, rank).
"""
import json
import os

import numpy as np


def directory(out):
    return out + ".ckpt"


def save(out, rank, arrays, meta):
    """arrays: name -> ndarray; meta: JSON-able dict (step, counters, sampler state, ...)."""
    folder = directory(out)
    os.makedirs(folder, exist_ok=True)
    final = os.path.join(folder, f"rank{rank}.npz")
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


def load(out, rank):
    """(arrays, meta) of this rank's checkpoint; FileNotFoundError with advice if there is none."""
    path = os.path.join(directory(out), f"rank{rank}.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint {path} to resume from; run with --checkpoint-every first, "
                                "with the same --out and the same number of ranks")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "__meta__"}
        meta = json.loads(bytes(f["__meta__"]).decode())
    return arrays, meta
