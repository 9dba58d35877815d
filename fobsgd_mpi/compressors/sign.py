"""Plain sign (signSGD): one bit per coordinate, no scale; the server takes a majority vote."""
import numpy as np

from .base import Compressor, PayloadSpec
from .registry import register


@register("sign")
class Sign(Compressor):
    bits_up = 1.0

    def spec(self, d):
        return PayloadSpec((("bits", np.uint64, (d + 63) // 64),))

    def block_ranges(self, layout, blocks):
        return [(int(layout.offsets[b]) // 8, -(-int(layout.valid[b]) // 64) * 8) for b in blocks]

    def _encode(self, x, step, rank, payload):
        self.kernels.pack_signs(x, payload.bits)

    def _decode(self, payload, step, d, out, weight, accumulate):
        if accumulate:
            out += self.decode(payload, step, d, weight=weight)
        else:
            self.kernels.unpack_signs(payload.bits, weight, out[:d])

    def majority_vote(self, rows, d, out=None):
        """Payload whose bit is + where at least half of the gathered rows (n, nbytes) vote +."""
        payload = out if out is not None else self.spec(d).empty()
        self.kernels.majority_vote(rows.view(np.uint64), payload.bits)
        return payload
