"""One-bit dithered quantization, with (`fo1bit`) or without (`dithered-sign`) flattening.

FO-SGD (Stollenwerk & Jacques, arXiv 2405.11095), per block of m coordinates:
  1. y = H D x / sqrt(m), D = diag(+-1) from the stream of (seed, step, block), shared by all ranks;
  2. lambda = ||x||_2 sqrt(2 ln(2m / eta) / m)  ("norm", biased only by rare clipping)
     or lambda = max|y|                        ("max", unbiased),
     or the smaller of the two                 ("min": never clips more than "norm", never has
                                                more variance than either);
  3. bits b_j = [y_j + tau_j >= 0], tau_j ~ U(-lambda, lambda) from the stream of (seed, step,
     block, rank); decode q = lambda (2b - 1), x_hat = D H q / sqrt(m).
Flattening spreads a sparse x over the block, so the variance per block is about
(2 ln(2m/eta) - 1) ||x||^2 instead of the m ||x||_inf^2 that dithered sign pays without it.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from .. import rng
from ..native import LAMBDA_MAX, LAMBDA_MIN, LAMBDA_NORM
from .base import BlockOptions, flag
from .onebit import OneBitCompressor
from .registry import register

LAMBDA_RULES = {"norm": LAMBDA_NORM, "max": LAMBDA_MAX, "min": LAMBDA_MIN}


@dataclass(frozen=True)
class FlatOptions(BlockOptions):
    eta: float = 1e-2
    lambda_rule: str = "norm"
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.lambda_rule not in LAMBDA_RULES:
            raise ValueError(f"lambda_rule must be one of {', '.join(LAMBDA_RULES)}, got {self.lambda_rule!r}")
        if not 0 < self.eta < 1:
            raise ValueError(f"eta must lie in (0, 1), got {self.eta!r}")


@register("fo1bit")
class FlattenedOneBit(OneBitCompressor):
    rotate = True
    bits_up = 1.0
    Options = FlatOptions

    def lambda_factors(self, layout):
        """sqrt(2 ln(2m / eta) / m) per block (the "norm" rule's lambda / ||x||_2)."""
        return np.array([math.sqrt(2 * math.log(2 * m / self.eta) / m) for m in layout.sizes.tolist()])

    def _quantize(self, x, layout, rotate, step, rank, payload):
        self.kernels.encode_1bit(x, layout, rotate, LAMBDA_RULES[self.lambda_rule], self.lambda_factors(layout),
                                 self.seed, step, rank, payload.bits, payload.scales, self.n_threads)

    def _encode(self, x, step, rank, payload, lay):
        self._quantize(x, lay, self.rotate, step, rank, payload)

    def encode_flat(self, v, step, rank, d, out=None):
        """Re-quantize a server sum v (padded length, already in the encoded domain) without
        transforming it: the payload decodes like any worker's. `d` is the vector length, or the
        flat BlockLayout of v (a server's shard, BlockLayout.subset)."""
        layout = self.layout_of(d).flat()
        payload = out if out is not None else self.spec_of(layout).empty()
        self._quantize(v, layout, False, int(step), int(rank), payload)
        return payload

    def unflatten(self, v, step, d):
        """What a sum v in the encoded domain (padded length) is in the original one: D H v per
        block, truncated to d."""
        layout = self.layout(d)
        out = np.array(v[: layout.padded], dtype=np.float32)
        if self.rotate:
            for b, off, m, _ in layout.blocks():
                y = self.kernels.fwht_(out[off : off + m])
                y[rng.rademacher_flips(self.seed, step, b, m)] *= -1
        return out[:d]

    def _decode(self, payload, step, d, out, weight, accumulate):
        self.kernels.decode_1bit(payload.bits, payload.scales, self.layout(d), self.rotate, self.seed, step, out,
                                 weight, accumulate, self.n_threads)


@register("dithered-sign")
class DitheredSign(FlattenedOneBit):
    """The same quantizer without the flattening (the ablation): lambda = max|x| per block, so a
    sparse x pays a variance of about m ||x||_inf^2."""

    rotate = False

    @dataclass(frozen=True)
    class Options(FlatOptions):
        lambda_rule: str = field(default="max", metadata=flag(None))  # the unbiased rule, whatever --lambda-rule says
