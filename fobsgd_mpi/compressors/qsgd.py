"""QSGD (Alistarh et al. 2017): unbiased stochastic quantization to s levels per bucket.

The bucket is --block-size (1024 when unset; the paper's "bucket size d", e.g. 512).
Per bucket b: level l_j = floor(s |x_j| / ||x_b||_2 + u_j), u_j ~ U[0, 1) from the stream of
(seed, step, block, rank); x_hat_j = ||x_b||_2 sign(x_j) l_j / s. Sent with fixed-width packing:
one sign bit plus ceil(log2(s + 1)) level bits per coordinate, one float32 norm per bucket.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from .. import arrays, rng
from .base import BlockCompressor, BlockOptions, PayloadSpec, flag
from .registry import register

PURPOSE_QSGD = 3


@dataclass(frozen=True)
class QSGDOptions(BlockOptions):
    block_size: int = 1024
    levels: int = field(default=15, metadata=flag("qsgd_levels"))
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.levels, int) or not 1 <= self.levels <= 2**15 - 1:
            raise ValueError(f"qsgd levels must be an integer in 1..32767, got {self.levels!r}")


@register("qsgd")
class QSGD(BlockCompressor):
    Options = QSGDOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.width = 1 + math.ceil(math.log2(self.levels + 1))
        self.bits_up = float(self.width)

    def spec(self, d):
        lay = self.layout(d)
        return PayloadSpec((("codes", np.uint64, -(-lay.padded * self.width // 64)),
                            ("norms", np.float32, lay.n_blocks)))

    def _encode(self, x, step, rank, payload, lay):
        if arrays.is_tensor(x):
            return self.kernels_for(x).qsgd_encode(x, lay, self.levels, self.seed, step, rank, payload.codes,
                                                   payload.norms)
        if not np.isfinite(x).all():
            from ..errors import NonFiniteError
            raise NonFiniteError("vector to encode holds NaN or Inf; fix the gradient before encoding")
        xp = np.zeros(lay.padded, dtype=np.float32)
        xp[: len(x)] = x
        codes = np.empty(lay.padded, dtype=np.uint16)
        for b, off, m, _ in lay.blocks():
            xb = xp[off : off + m].astype(np.float64)
            norm = np.float32(np.linalg.norm(xb))
            words = rng.stream_words(rng.stream_key(self.seed, step, b, rank, PURPOSE_QSGD), m)
            u = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
            level = np.floor(self.levels * np.abs(xb) / norm + u) if norm > 0 else np.zeros(m)
            codes[off : off + m] = (np.minimum(level, self.levels).astype(np.uint16) << 1) | (xb < 0)
            payload.norms[b] = norm
        bitplanes = (codes[:, None] >> np.arange(self.width, dtype=np.uint16)) & 1
        packed = np.packbits(bitplanes.astype(np.uint8).ravel(), bitorder="little")
        payload.codes.view(np.uint8)[: len(packed)] = packed

    def _decode(self, payload, step, d, out, weight, accumulate):
        lay = self.layout(d)
        if arrays.is_tensor(out):
            return self.kernels_for(out).qsgd_decode(payload.codes, payload.norms, lay, self.levels, out, weight,
                                                     accumulate)
        bitplanes = np.unpackbits(payload.codes.view(np.uint8), bitorder="little")[: lay.padded * self.width]
        codes = (bitplanes.reshape(-1, self.width).astype(np.uint32) << np.arange(self.width, dtype=np.uint32)).sum(1)
        values = (codes >> 1).astype(np.float32) / np.float32(self.levels)
        values = np.where(codes & 1, -values, values) * np.repeat(payload.norms, lay.sizes)
        xb = np.float32(weight) * values[:d].astype(np.float32)
        if accumulate:
            out[:d] += xb
        else:
            out[:d] = xb
