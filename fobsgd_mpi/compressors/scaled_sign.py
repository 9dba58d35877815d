"""Scaled sign C(x) = a sign(x) (LIEC-SGD, EF-SGD, DoubleSqueeze): one bit per coordinate, with
a = ||x_t||_1 / len_t per tensor t of the model (--sign-scale tensor, as the EF-SGD and
DoubleSqueeze reference code scales each parameter tensor; the payload then carries one float32
per tensor), a = ||x||_1 / d over the whole flat vector (--sign-scale vector) or a = ||x_b||_1 /
len_b per block b of --block-size (--sign-scale block). The vector and block payloads keep one
float32 per block (the per-vector scale repeated), so a sharded server cuts them by blocks; the
tensor scales do not split by blocks. An exact zero takes the sign of --sign-ties (see sign.py).

Biased: the algorithms that use it carry the error x - C(x) themselves.
"""
from dataclasses import dataclass

import numpy as np

from .. import arrays
from .base import PayloadSpec, check_choice
from .onebit import OneBitCompressor
from .registry import register
from .sign import SIGN_TIES, SignOptions

SIGN_SCALES = ("tensor", "vector", "block")


@dataclass(frozen=True)
class ScaledSignOptions(SignOptions):
    sign_scale: str = "tensor"
    # the flat vector's tensors in order (models.FlatModel.tensor_sizes); None: one tensor
    tensor_sizes: tuple = None

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "sign_scale", SIGN_SCALES)
        if self.tensor_sizes is not None and (not self.tensor_sizes or min(self.tensor_sizes) < 1):
            raise ValueError(f"tensor_sizes must be positive tensor lengths, got {self.tensor_sizes!r}")


@register("scaled-sign")
class ScaledSign(OneBitCompressor):
    bits_up = 1.0
    Options = ScaledSignOptions

    def segment_starts(self, d):
        """Where the tensors whose scales a vector of length d carries start, and d (int64)."""
        sizes = np.asarray(self.tensor_sizes if self.tensor_sizes is not None else (d,), dtype=np.int64)
        if int(sizes.sum()) != d:
            raise ValueError(f"the tensor sizes add up to {int(sizes.sum())} coordinates, the vector has {d}")
        return np.concatenate([[0], np.cumsum(sizes)])

    def spec_of(self, layout):
        if self.sign_scale != "tensor":
            return super().spec_of(layout)
        n_tensors = len(self.segment_starts(layout.d)) - 1
        return PayloadSpec((("bits", np.uint64, layout.n_words), ("scales", np.float32, n_tensors)))

    def block_ranges(self, layout, blocks):
        if self.sign_scale == "tensor":
            raise ValueError("--sign-scale tensor keeps one scale per model tensor, which does not split by blocks; "
                             "use --sign-scale block (or vector) with --servers above 1")
        return super().block_ranges(layout, blocks)

    def _encode(self, x, step, rank, payload, lay):
        kernels = self.kernels_for(x)
        tensor = self.sign_scale == "tensor"
        kernels.scaled_sign_encode(x, lay, SIGN_TIES[self.sign_ties], self.seed, step, payload.bits,
                                   None if tensor else payload.scales, self.n_threads)
        if tensor:
            kernels.segment_abs_means(x, self.segment_starts(len(x)), payload.scales, self.n_threads)
        elif self.sign_scale == "vector":  # the blocks' means, weighted by their lengths
            block_l1 = arrays.host(payload.scales).astype(np.float64)
            payload.scales[:] = float(np.float32(np.dot(block_l1, lay.valid) / len(x)))

    def _decode(self, payload, step, d, out, weight, accumulate):
        if self.sign_scale == "tensor":
            self.kernels_for(out).segment_sign_decode(payload.bits, self.segment_starts(d), payload.scales, out,
                                                      weight, accumulate, self.n_threads)
        else:
            self.kernels_for(out).scaled_sign_decode(payload.bits, payload.scales, self.layout(d), out, weight,
                                                     accumulate, self.n_threads)

    def aggregate(self, rows, weights, d, out=None):
        if self.sign_scale != "tensor":
            return super().aggregate(rows, weights, d, out)
        lay = self.layout_of(d)
        if out is None:
            out = np.empty(lay.padded, dtype=np.float32)
        out[lay.d :] = 0
        self.kernels.segment_sign_aggregate(rows, self.spec_of(lay).offsets["scales"],
                                            np.ascontiguousarray(weights, dtype=np.float32),
                                            self.segment_starts(lay.d), out, self.n_threads)
        return out
