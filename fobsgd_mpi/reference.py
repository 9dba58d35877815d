"""numpy reference of every native kernel (native/include/fobsgd.h), same signatures as
fobsgd_mpi.native. Tests hold the two equal: identical bits and scales, decoded floats allclose.
Also the fallback when the extension is not built.

The transform applies its stages in the native kernels' order (stride 1, 2, 4, ...) and scales
last, so the float32 results agree to the bit.
"""
import math

import numpy as np

from . import rng
from .errors import NonFiniteError

LAMBDA_NORM, LAMBDA_MAX, LAMBDA_MIN = 0, 1, 2
TIES_POSITIVE, TIES_RANDOM = 0, 1  # the sign of an exact zero / a tied vote: + always, or shared random


def check_fwht_input(x):
    if not isinstance(x, np.ndarray):
        raise ValueError(f"fwht_ needs a numpy array, got {type(x).__name__}")
    if x.dtype.char not in "fd":
        raise ValueError(f"fwht_ needs float32 or float64, got {x.dtype}")
    flags = x.flags
    if not (flags.c_contiguous and flags.writeable):
        raise ValueError("fwht_ works in place: pass a C-contiguous, writeable array (np.ascontiguousarray)")
    n = x.shape[-1] if x.ndim else 0
    if n < 1 or n & (n - 1) or n > 1 << 30:
        raise ValueError(f"fwht_ needs a power-of-two last axis up to 2^30, got length {n}")
    return n


def fwht_(x, normalize=True):
    """In-place Walsh-Hadamard transform over the last axis; orthonormal if `normalize`."""
    n = check_fwht_input(x)
    rows = x.reshape(-1, n)
    h = 1
    while h < n:
        v = rows.reshape(-1, n // (2 * h), 2, h)
        a = v[:, :, 0, :].copy()
        v[:, :, 0, :] += v[:, :, 1, :]
        np.subtract(a, v[:, :, 1, :], out=v[:, :, 1, :])
        h *= 2
    if normalize and n > 1:
        x *= x.dtype.type(1.0 / math.sqrt(n))
    return x


def _padded(x, layout):
    xp = np.zeros(layout.padded, dtype=np.float32)
    xp[: layout.d] = x[: layout.d]
    return xp


def _bits_of(words, off, m):
    return np.unpackbits(words[off // 64 : (off + m) // 64].view(np.uint8), bitorder="little").astype(bool)


def _store_bits(words, off, flags):
    words[off // 64 : (off + len(flags)) // 64] = np.packbits(flags, bitorder="little").view(np.uint64)


def _finite_sumsq(xb, what):
    s = float(np.dot(xb.astype(np.float64), xb.astype(np.float64)))
    if not math.isfinite(s):
        raise NonFiniteError(f"{what} holds NaN or Inf; fix the gradient (lower the learning rate) before encoding")
    return s


def encode_1bit(x, layout, rotate, rule, lambda_factor, seed, step, rank, bits, scales, n_threads=1):
    xp = _padded(x, layout)
    for b, off, m, _ in layout.blocks():
        key = int(layout.block_ids[b])
        y = xp[off : off + m]
        sumsq = _finite_sumsq(y, "vector to encode")
        if rotate:
            y = np.where(rng.rademacher_flips(seed, step, key, m), -y, y)
            fwht_(y)
        lam = np.float32(math.sqrt(sumsq) * lambda_factor[b])
        if rule == LAMBDA_MAX:
            lam = np.abs(y).max()
        elif rule == LAMBDA_MIN:
            lam = min(lam, np.abs(y).max())
        tau = lam * rng.centred_uniforms(seed, step, key, rank, m)
        _store_bits(bits, off, (y + tau) >= 0)
        scales[b] = lam


def decode_1bit(bits, scales, layout, rotate, seed, step, out, weight=1.0, accumulate=False, n_threads=1):
    for b, off, m, valid in layout.blocks():
        q = np.where(_bits_of(bits, off, m), scales[b], -scales[b]).astype(np.float32)
        if rotate:
            fwht_(q)
            q = np.where(rng.rademacher_flips(seed, step, int(layout.block_ids[b]), m), -q, q)
        xb = np.float32(weight) * q[:valid]
        if accumulate:
            out[off : off + valid] += xb
        else:
            out[off : off + valid] = xb


def aggregate_1bit(payloads, scales_offset, weights, layout, out, n_threads=1):
    for b, off, m, _ in layout.blocks():
        acc = np.zeros(m, dtype=np.float32)
        for i in range(payloads.shape[0]):
            words = payloads[i, :scales_offset].view(np.uint64)
            scale = payloads[i, scales_offset:].view(np.float32)[b]
            c = np.float32(weights[i]) * scale
            acc += np.where(_bits_of(words, off, m), c, -c)
        out[off : off + m] = acc


def _tie_flags(ties, seed, step, block, m, purpose):
    return np.ones(m, dtype=bool) if ties == TIES_POSITIVE else rng.shared_bits(seed, step, block, m, purpose)


def scaled_sign_encode(x, layout, ties, seed, step, bits, scales, n_threads=1):
    for b, off, m, valid in layout.blocks():
        xb = x[off : off + valid]
        l1 = float(np.abs(xb.astype(np.float64)).sum())
        if not math.isfinite(l1):
            raise NonFiniteError("vector to encode holds NaN or Inf; fix the gradient before encoding")
        zero = _tie_flags(ties, seed, step, int(layout.block_ids[b]), valid, rng.PURPOSE_ZERO_SIGN)
        flags = np.zeros(m, dtype=bool)
        flags[:valid] = (xb > 0) | ((xb == 0) & zero)
        held = min(m, 64 * len(bits) - off)  # a plain sign payload ends at ceil(d / 64) words
        if held > 0:
            _store_bits(bits, off, flags[:held])
        if scales is not None:
            scales[b] = np.float32(l1 / valid) if valid else np.float32(0)


def scaled_sign_decode(bits, scales, layout, out, weight=1.0, accumulate=False, n_threads=1):
    for b, off, m, valid in layout.blocks():
        a = np.float32(weight) * (np.float32(1) if scales is None else scales[b])
        xb = np.where(_bits_of(bits, off, m)[:valid], a, -a)
        if accumulate:
            out[off : off + valid] += xb
        else:
            out[off : off + valid] = xb


def majority_vote(words, layout, ties, seed, step, out):
    """words: (n, n_words) uint64; a position votes + where more than half the inputs set it, and
    where exactly half do (n even) as the tie rule says."""
    n = words.shape[0]
    counts = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1, bitorder="little").sum(axis=0, dtype=np.int64)
    flags = 2 * counts > n
    if n % 2 == 0:
        for b, off, m, _ in layout.blocks():
            end = min(off + m, len(flags))
            if end > off:
                tie = _tie_flags(ties, seed, step, int(layout.block_ids[b]), end - off, rng.PURPOSE_VOTE_TIE)
                flags[off:end] |= (2 * counts[off:end] == n) & tie
    out[:] = np.packbits(flags, bitorder="little").view(np.uint64)
