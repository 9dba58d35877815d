"""Top-k sparsification: the k largest-magnitude coordinates as (uint32 index, float32 value)."""
import math

import numpy as np

from .base import Compressor, PayloadSpec
from .registry import register


@register("topk")
class TopK(Compressor):
    def __init__(self, ratio=0.01, **options):
        super().__init__(**options)
        if not 0 < ratio <= 1:
            raise ValueError(f"topk ratio must lie in (0, 1], got {ratio!r}")
        self.ratio = float(ratio)
        self.bits_up = 64 * self.ratio

    def k(self, d):
        return max(1, math.ceil(self.ratio * d))

    def spec(self, d):
        k = self.k(d)
        return PayloadSpec((("indices", np.uint32, k), ("values", np.float32, k)))

    def _encode(self, x, step, rank, payload):
        k = self.k(len(x))
        idx = np.argpartition(np.abs(x), len(x) - k)[len(x) - k :] if k < len(x) else np.arange(len(x))
        idx.sort()
        payload.indices[:] = idx
        payload.values[:] = x[idx]

    def _decode(self, payload, step, d, out, weight, accumulate):
        if not accumulate:
            out[:d] = 0
        np.add.at(out, payload.indices.astype(np.int64), np.float32(weight) * payload.values)
