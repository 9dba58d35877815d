"""Payloads of packed sign bits plus one float32 scale per block, and their server-side sum."""
import numpy as np

from .base import Compressor, PayloadSpec


class OneBitCompressor(Compressor):
    """bits (uint64, one bit per padded coordinate) + scales (float32, one per block)."""

    def spec(self, d):
        lay = self.layout(d)
        return PayloadSpec((("bits", np.uint64, lay.n_words), ("scales", np.float32, lay.n_blocks)))

    def aggregate(self, rows, weights, d, out=None):
        """sum_i weights[i] * scale_i * (2 b_i - 1) over the padded length, from gathered payload
        rows (n, nbytes) uint8, without unpacking them to bytes."""
        lay = self.layout(d)
        if out is None:
            out = np.empty(lay.padded, dtype=np.float32)
        weights = np.ascontiguousarray(weights, dtype=np.float32)
        scales_offset = self.spec(d).offsets["scales"]
        self.kernels.aggregate_1bit(rows, scales_offset, weights, lay, out, self.n_threads)
        return out
