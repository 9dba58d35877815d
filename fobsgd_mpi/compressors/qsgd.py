"""QSGD (Alistarh et al. 2017): unbiased stochastic quantization to s levels per bucket.

The bucket is --block-size (1024 when unset; the paper's "bucket size d", e.g. 512).
Per bucket b: level l_j = floor(s |x_j| / ||x_b||_2 + u_j), u_j ~ U[0, 1) from the stream of
(seed, step, block, rank); x_hat_j = ||x_b||_2 sign(x_j) l_j / s. Sent with fixed-width packing:
one sign bit plus ceil(log2(s + 1)) level bits per coordinate, one float32 norm per bucket. The
kernels: reference.qsgd_encode / qsgd_decode, their C++ twins (native/src/kernels.inl) and the
torch codec's.
"""
from dataclasses import dataclass, field

import numpy as np

from ..reference import qsgd_width
from .base import BlockCompressor, BlockOptions, PayloadSpec, flag
from .registry import register


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
        self.width = qsgd_width(self.levels)
        self.bits_up = float(self.width)

    def spec(self, d):
        lay = self.layout(d)
        return PayloadSpec((("codes", np.uint64, -(-lay.padded * self.width // 64)),
                            ("norms", np.float32, lay.n_blocks)))

    def _encode(self, x, step, rank, payload, lay):
        self.kernels_for(x).qsgd_encode(x, lay, self.levels, self.seed, step, rank, payload.codes, payload.norms,
                                        self.n_threads)

    def _decode(self, payload, step, d, out, weight, accumulate):
        self.kernels_for(out).qsgd_decode(payload.codes, payload.norms, self.layout(d), self.levels, out, weight,
                                          accumulate, self.n_threads)
