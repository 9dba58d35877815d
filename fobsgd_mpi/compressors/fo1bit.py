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

The server's re-quantization (encode_flat) takes its scale by `server_scale`:
  "eta"        the workers' rule above (lambda_rule);
  "mse"        per block the lam* minimizing the expected squared error of the re-quantized sum
               (reference.mse_lambda, exact): it clips about half of a Gaussian block on purpose,
               so E[x_hat] is the sum with its large coordinates pulled towards zero;
  "mse-shrink" lam* and a gain g <= 1 folded into the transmitted float, (1 - N/||v||^2)_+ times
               the clipping gain, N the uplink noise the workers' scales bound
               (reference.server_scales): a James-Stein shrinkage, biased towards zero;
  "mse-debias" lam* and the gain m / (unclipped count), which undoes lam*'s own shrinkage of the
               mean to first order (<E x_hat, mean> ~ ||mean||^2 again);
  "drive"      no dither: the signs of the block and the scale ||y||^2 / ||y||_1 (DRIVE, Vargaftik et
               al., NeurIPS 2021), so <x_hat, v> = ||v||^2 exactly; unbiased through the random
               rotation alone (exactly so for a uniformly random one; tests/test_server_scale.py
               measures the randomized Hadamard's bias).
Either way the payload is the same bits and one float per block; the server alone computes the
float and every rank decodes the one it receives, so replicas stay bit-identical.

A worker's own encode takes its scale by `worker_scale`: "eta" (step 2 above), or "mse" /
"mse-debias" / "drive" as the server's, on its flattened block, in the same fused kernel (the
lambda rules LAMBDA_MSE, LAMBDA_MSE_DEBIAS and LAMBDA_DRIVE). After the flattening a block is
close to Gaussian, where lam* clips about half of it: the decoded vector's squared error drops
from about (2 ln(2m/eta) - 1) ||x||^2 to about 0.8 ||x||^2 with "mse-debias", whose gain keeps it
unbiased along x to first order (tests/test_server_scale.py measures both at m = 4096: 13.7 and
0.79 for a Gaussian x, gain along x 0.99); with "drive" it is about pi/2 - 1 = 0.57, its gain
exactly 1.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from .. import reference, rng
from ..native import LAMBDA_DRIVE, LAMBDA_MAX, LAMBDA_MIN, LAMBDA_MSE, LAMBDA_MSE_DEBIAS, LAMBDA_NORM
from .base import BlockOptions, check_choice, flag
from .onebit import OneBitCompressor
from .registry import register

LAMBDA_RULES = {"norm": LAMBDA_NORM, "max": LAMBDA_MAX, "min": LAMBDA_MIN}
BLOCK_RULES = {"mse": LAMBDA_MSE, "mse-debias": LAMBDA_MSE_DEBIAS, "drive": LAMBDA_DRIVE}  # made on the block
SERVER_SCALES = ("eta", "mse", "mse-shrink", "mse-debias", "drive")
WORKER_SCALES = ("eta", "mse", "mse-debias", "drive")  # not mse-shrink: it shrinks by the uplink's noise


@dataclass(frozen=True)
class FlatOptions(BlockOptions):
    eta: float = 1e-2
    lambda_rule: str = "norm"
    seed: int = 0
    server_scale: str = "eta"
    worker_scale: str = "eta"

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "server_scale", SERVER_SCALES)
        check_choice(self, "worker_scale", WORKER_SCALES)
        check_choice(self, "lambda_rule", LAMBDA_RULES)
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

    def _quantize(self, x, layout, rotate, step, rank, payload, scale="eta"):
        """The one-bit kernel on x's blocks (transformed first if `rotate`), with the scale rule
        `scale`: eta (--lambda-rule's), mse or mse-debias (lam* of the transformed block), drive."""
        rule = LAMBDA_RULES[self.lambda_rule] if scale == "eta" else BLOCK_RULES[scale]
        self.kernels_for(x).encode_1bit(x, layout, rotate, rule, self.lambda_factors(layout), self.seed, step, rank,
                                        payload.bits, payload.scales, self.n_threads)

    def _encode(self, x, step, rank, payload, lay):
        self._quantize(x, lay, self.rotate, step, rank, payload, self.worker_scale)

    def encode_flat(self, v, step, rank, d, out=None, uplink_noise=None):
        """Re-quantize a server sum v (padded length, already in the encoded domain) without
        transforming it, with the scale rule `server_scale`: the payload decodes like any worker's.
        `d` is the vector length, or the flat BlockLayout of v (a server's shard,
        BlockLayout.subset); "mse-shrink" needs `uplink_noise`, per block the bound on the uplink
        noise's squared norm (uplink_noise_bound)."""
        layout = self.layout_of(d).flat()
        payload = out if out is not None else self.spec_of(layout).empty()
        if self.server_scale != "mse-shrink":
            self._quantize(v, layout, False, int(step), int(rank), payload, self.server_scale)
            return payload
        if uplink_noise is None:
            raise ValueError("server_scale mse-shrink needs the uplink noise bound (uplink_noise_bound of the rows)")
        lams, gains, norms = reference.server_scales(v, layout, uplink_noise, mse_scales=self.kernels.mse_scales,
                                                     n_threads=self.n_threads)
        # the "norm" rule with the factor lam*/||v_b|| dithers with the float the "mse" rule would, without its search
        factors = np.divide(lams, norms, out=np.zeros_like(lams), where=norms > 0)
        self.kernels_for(v).encode_1bit(v, layout, False, LAMBDA_NORM, factors, self.seed, int(step), int(rank),
                                        payload.bits, payload.scales, self.n_threads)
        payload.scales[:] = (payload.scales * gains).astype(np.float32)  # the bits dither with lam*, decode g lam*
        return payload

    def uplink_noise_bound(self, rows, weights, d):
        """Per block, sum_i w_i^2 m lam_i^2 from gathered worker rows (n, nbytes): a bound on the
        expected squared norm of the uplink noise in their weighted sum (tight up to the workers'
        own ||y_i||^2, which the server never sees). `d`: the vector length or the rows' layout."""
        layout = self.layout_of(d)
        at = self.spec_of(layout).offsets["scales"]
        lam = np.ascontiguousarray(rows[:, at:]).view(np.float32).astype(np.float64)
        w = np.asarray(weights, dtype=np.float64)[:, None]
        return np.sum((w * lam) ** 2, axis=0) * layout.sizes

    def flatten(self, x, step, d):
        """H D x per block (padded length): what encode quantizes, for a server that re-flattens."""
        layout = self.layout(d)
        out = np.zeros(layout.padded, dtype=np.float32)
        out[:d] = x[:d]
        if self.rotate:
            for b, off, m, _ in layout.blocks():
                y = out[off : off + m]
                y[rng.rademacher_flips(self.seed, step, b, m)] *= -1
                self.kernels.fwht_(y)
        return out

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
        self.kernels_for(out).decode_1bit(payload.bits, payload.scales, self.layout(d), self.rotate, self.seed, step,
                                          out, weight, accumulate, self.n_threads)


@register("dithered-sign")
class DitheredSign(FlattenedOneBit):
    """The same quantizer without the flattening (the ablation): lambda = max|x| per block, so a
    sparse x pays a variance of about m ||x||_inf^2."""

    rotate = False

    @dataclass(frozen=True)
    class Options(FlatOptions):
        lambda_rule: str = field(default="max", metadata=flag(None))  # the unbiased rule, whatever --lambda-rule says

        def __post_init__(self):
            super().__post_init__()
            if "drive" in (self.worker_scale, self.server_scale):
                raise ValueError("the drive scale is unbiased only through the flattening's random rotation, which "
                                 "dithered-sign leaves out; use fo-sgd, or another --worker-scale / --server-scale")
