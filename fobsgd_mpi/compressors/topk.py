"""Top-k sparsification: the k largest-magnitude coordinates as (uint32 index, float32 value).

k = ceil(d * ratio), at least 1, with the ratio taken exactly as the decimal it was written as
(0.07 is 7/100, so d = 100 keeps 7; float arithmetic gives 100 * 0.07 = 7.000000000000001 and
keeps 8). GRACE keeps int(d * ratio), the floor, so where d * ratio is not a whole number it keeps
one coordinate fewer than this. Top-k selects over the whole vector: it has no blocks.
"""
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .. import arrays
from .base import Compressor, Options, PayloadSpec, flag
from .registry import register


@dataclass(frozen=True)
class TopKOptions(Options):
    ratio: float = field(default=0.01, metadata=flag("topk_ratio"))

    def __post_init__(self):
        if not 0 < self.ratio <= 1:
            raise ValueError(f"topk ratio must lie in (0, 1], got {self.ratio!r}")


@register("topk")
class TopK(Compressor):
    Options = TopKOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.exact_ratio = Fraction(str(self.ratio))  # a float's str is the shortest decimal that is it
        self.bits_up = 64 * float(self.ratio)

    def k(self, d):
        return max(1, math.ceil(d * self.exact_ratio))

    def spec(self, d):
        k = self.k(d)
        return PayloadSpec((("indices", np.uint32, k), ("values", np.float32, k)))

    def _encode(self, x, step, rank, payload):
        k = self.k(len(x))
        if arrays.is_tensor(x):
            return self.kernels_for(x).topk_encode(x, k, payload.indices, payload.values)
        idx = np.argpartition(np.abs(x), len(x) - k)[len(x) - k :] if k < len(x) else np.arange(len(x))
        idx.sort()
        payload.indices[:] = idx
        payload.values[:] = x[idx]

    def _decode(self, payload, step, d, out, weight, accumulate):
        if arrays.is_tensor(out):
            return self.kernels_for(out).topk_decode(payload.indices, payload.values, d, out, weight, accumulate)
        if not accumulate:
            out[:d] = 0
        np.add.at(out, payload.indices.astype(np.int64), np.float32(weight) * payload.values)
