"""No compression: float32 values (the fp32 baseline's payload). Its blocks only say how a
sharded server splits the vector."""
import numpy as np

from .. import arrays
from .base import BlockCompressor, PayloadSpec
from .registry import register


@register("identity")
class Identity(BlockCompressor):
    bits_up = 32.0

    def spec(self, d):
        return PayloadSpec((("values", np.float32, d),))

    def block_ranges(self, layout, blocks):
        return [(4 * int(layout.offsets[b]), 4 * int(layout.valid[b])) for b in blocks]

    def _encode(self, x, step, rank, payload, lay):
        payload.values[:] = x

    def _decode(self, payload, step, d, out, weight, accumulate):
        if arrays.is_tensor(out):  # torch rounds a Python float to the tensor's float32, as numpy's float32 here
            values = float(np.float32(weight)) * payload.values
            if accumulate:
                out[:d] += values
            else:
                out[:d] = values
        elif accumulate:
            out += np.float32(weight) * payload.values
        else:
            np.multiply(payload.values, np.float32(weight), out=out[:d])
