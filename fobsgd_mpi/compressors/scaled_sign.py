"""Scaled sign C(x) = a sign(x) (LIEC-SGD, EF-SGD, DoubleSqueeze): one bit per coordinate, with
a = ||x||_1 / d over the whole vector (--sign-scale vector, as the EF-SGD and DoubleSqueeze papers
scale each tensor) or a = ||x_b||_1 / len_b per block b of --block-size (--sign-scale block). The
payload keeps one float32 per block either way (the per-vector scale repeated), so a sharded
server cuts it by blocks alike. An exact zero takes the sign of --sign-ties (see sign.py).

Biased: the algorithms that use it carry the error x - C(x) themselves.
"""
from dataclasses import dataclass

import numpy as np

from .. import arrays
from .base import check_choice
from .onebit import OneBitCompressor
from .registry import register
from .sign import SIGN_TIES, SignOptions

SIGN_SCALES = ("vector", "block")


@dataclass(frozen=True)
class ScaledSignOptions(SignOptions):
    sign_scale: str = "vector"

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "sign_scale", SIGN_SCALES)


@register("scaled-sign")
class ScaledSign(OneBitCompressor):
    bits_up = 1.0
    Options = ScaledSignOptions

    def _encode(self, x, step, rank, payload, lay):
        self.kernels_for(x).scaled_sign_encode(x, lay, SIGN_TIES[self.sign_ties], self.seed, step, payload.bits,
                                               payload.scales, self.n_threads)
        if self.sign_scale == "vector":  # the blocks' means, weighted by their lengths
            block_l1 = arrays.host(payload.scales).astype(np.float64)
            payload.scales[:] = float(np.float32(np.dot(block_l1, lay.valid) / len(x)))

    def _decode(self, payload, step, d, out, weight, accumulate):
        self.kernels_for(out).scaled_sign_decode(payload.bits, payload.scales, self.layout(d), out, weight,
                                                 accumulate, self.n_threads)
