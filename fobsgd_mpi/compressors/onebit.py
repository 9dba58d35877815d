"""Payloads of packed sign bits plus one float32 scale per block, and their server-side sum."""
import numpy as np

from .base import BlockCompressor, PayloadSpec


class OneBitCompressor(BlockCompressor):
    """bits (uint64, one bit per padded coordinate) + scales (float32, one per block)."""

    def spec(self, d):
        return self.spec_of(self.layout(d))

    def spec_of(self, layout):
        return PayloadSpec((("bits", np.uint64, layout.n_words), ("scales", np.float32, layout.n_blocks)))

    def block_ranges(self, layout, blocks):
        scales_at = self.spec_of(layout).offsets["scales"]
        bits = [(int(layout.offsets[b]) // 8, int(layout.sizes[b]) // 8) for b in blocks]
        return bits + [(scales_at + 4 * int(b), 4) for b in blocks]

    def aggregate(self, rows, weights, d, out=None):
        """sum_i weights[i] * scale_i * (2 b_i - 1) over the padded length, from gathered payload
        rows (n, nbytes) uint8, without unpacking them to bytes. `d` is the vector length, or the
        BlockLayout of the rows (a server's shard)."""
        lay = self.layout_of(d)
        if out is None:
            out = np.empty(lay.padded, dtype=np.float32)
        weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.kernels.aggregate_1bit(rows, self.spec_of(lay).offsets["scales"], weights, lay, out, self.n_threads)
        return out
