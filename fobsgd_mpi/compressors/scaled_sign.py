"""Scaled sign C(x) = (||x_b||_1 / len_b) sign(x) per bucket b (LIEC-SGD, EF-SGD, DoubleSqueeze).

Biased: the algorithms that use it carry the error x - C(x) themselves.
"""
from .onebit import OneBitCompressor
from .registry import register


@register("scaled-sign")
class ScaledSign(OneBitCompressor):
    bits_up = 1.0

    def _encode(self, x, step, rank, payload):
        self.kernels.scaled_sign_encode(x, self.layout(len(x)), payload.bits, payload.scales, self.n_threads)

    def _decode(self, payload, step, d, out, weight, accumulate):
        self.kernels.scaled_sign_decode(payload.bits, payload.scales, self.layout(d), out, weight, accumulate,
                                        self.n_threads)
