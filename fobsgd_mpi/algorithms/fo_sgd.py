"""FO-SGD (SPEC §1.1): one-bit flattened payloads both ways, no error memory.

The server sums the workers' payloads in the flattened domain (the Rademacher diagonal is shared,
so no transform is needed), re-quantizes the sum with its own dither and broadcasts it; every
rank decodes the same x_hat, so replicas stay bit-identical.
"""
from .base import SERVER_STREAM, PSAlgorithm
from .registry import register


@register("fo-sgd")
class FOSGD(PSAlgorithm):
    up_compressor = down_compressor = "fo1bit"
    default_lr = 0.003

    def server(self, rows, step):
        v = self.up.aggregate(rows, self.weights, self.d)
        return self.up.encode_flat(v, step, SERVER_STREAM, self.d, out=self.down_buf)


@register("dithered-sign")
class DitheredSignSGD(FOSGD):
    """FO-SGD without the flattening: the ablation that shows the variance it prevents."""

    up_compressor = down_compressor = "dithered-sign"
