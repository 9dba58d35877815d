"""Plain sign (signSGD): one bit per coordinate, no scale; the server takes a majority vote.

An exact zero has no sign, and n/2 votes against n/2 (n even) no majority. By default
(--sign-ties random) each takes a seeded random +-1, bit j of the stream of (seed, step, block)
that every rank shares, so a dead ReLU unit (zero gradient on every worker) walks randomly
instead of moving by +lr at every step. --sign-ties positive sends + for both, as published
code does (GRACE: `tensor >= 0` and `sum >= 0`).
"""
from dataclasses import dataclass

import numpy as np

from ..native import TIES_POSITIVE, TIES_RANDOM
from .base import BlockCompressor, BlockOptions, PayloadSpec, check_choice
from .registry import register

SIGN_TIES = {"random": TIES_RANDOM, "positive": TIES_POSITIVE}


@dataclass(frozen=True)
class SignOptions(BlockOptions):
    seed: int = 0
    sign_ties: str = "random"

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "sign_ties", SIGN_TIES)


@register("sign")
class Sign(BlockCompressor):
    bits_up = 1.0
    Options = SignOptions

    def spec(self, d):
        return PayloadSpec((("bits", np.uint64, (d + 63) // 64),))

    def block_ranges(self, layout, blocks):
        return [(int(layout.offsets[b]) // 8, -(-int(layout.valid[b]) // 64) * 8) for b in blocks]

    def _encode(self, x, step, rank, payload, lay):
        self.kernels_for(x).scaled_sign_encode(x, lay, SIGN_TIES[self.sign_ties], self.seed, step,
                                               payload.bits, None, self.n_threads)

    def _decode(self, payload, step, d, out, weight, accumulate):
        self.kernels_for(out).scaled_sign_decode(payload.bits, None, self.layout(d), out, weight, accumulate,
                                                 self.n_threads)

    def majority_vote(self, rows, step, d, out=None):
        """Payload whose bit is + where more than half of the gathered rows (n, nbytes) vote +
        (a tie as --sign-ties says). `d` is the vector length, or the BlockLayout of the rows (a
        server's shard)."""
        lay = self.layout_of(d)
        payload = out if out is not None else self.spec_of(lay).empty()
        self.kernels.majority_vote(rows.view(np.uint64), lay, SIGN_TIES[self.sign_ties], self.seed, int(step),
                                   payload.bits)
        return payload
