"""Compressors: encode(x, step, rank) -> Payload, decode(payload, step, d) -> x_hat.

    >>> import numpy as np
    >>> from fobsgd_mpi import compressors
    >>> c = compressors.get("fo1bit")
    >>> x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    >>> p = c.encode(x, step=0, rank=1)
    >>> c.decode(p, step=0, d=1000).shape
    (1000,)
"""
from . import fo1bit, identity, qsgd, scaled_sign, sign, topk  # noqa: F401  (registers them)
from .base import BlockCompressor, BlockOptions, Compressor, Options, Payload, PayloadSpec  # noqa: F401
from .registry import from_config, get, names, register  # noqa: F401
