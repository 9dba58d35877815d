"""FO-SGD (SPEC §1.1): one-bit flattened payloads both ways, no error memory.

The server sums the workers' payloads in the flattened domain (the Rademacher diagonal is shared,
so no transform is needed), re-quantizes the sum with its own dither and broadcasts it; every
rank decodes the same x_hat, so replicas stay bit-identical.

With --downlink fresh-rotation the server instead decodes the sum once and flattens it again
with a rotation of its own (drawn for step | 2^62), at the cost of one more transform per block.
"""
from .base import SERVER_STREAM, PSAlgorithm
from .registry import register


@register("fo-sgd")
class FOSGD(PSAlgorithm):
    up_compressor = down_compressor = "fo1bit"
    default_lr = 0.02

    def __init__(self, ps, d, cfg):
        super().__init__(ps, d, cfg)
        self.fresh_rotation = cfg.downlink == "fresh-rotation"

    def downlink_step(self, step):
        return step | (1 << 62) if self.fresh_rotation else step

    def server(self, rows, step):
        v = self.up.aggregate(rows, self.weights, self.d)
        if self.fresh_rotation:
            mean = self.up.unflatten(v, step, self.d)
            self.down.encode(mean, self.downlink_step(step), SERVER_STREAM, out=self.down_buf)
        else:
            self.up.encode_flat(v, step, SERVER_STREAM, self.d, out=self.down_buf)

    def direction(self, down, step):
        return self.down.decode(down, self.downlink_step(step), self.d, out=self.dir_buf)


@register("dithered-sign")
class DitheredSignSGD(FOSGD):
    """FO-SGD without the flattening: the ablation that shows the variance it prevents."""

    up_compressor = down_compressor = "dithered-sign"
    default_lr = 0.005  # without flattening the variance is far larger: 0.02 diverged on cnn1d
