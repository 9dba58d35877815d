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


def scaled_sign_encode(x, layout, bits, scales, n_threads=1):
    xp = _padded(x, layout)
    for b, off, m, valid in layout.blocks():
        xb = xp[off : off + m]
        l1 = float(np.abs(xb.astype(np.float64)).sum())
        if not math.isfinite(l1):
            raise NonFiniteError("vector to encode holds NaN or Inf; fix the gradient before encoding")
        _store_bits(bits, off, xb >= 0)
        scales[b] = np.float32(l1 / valid) if valid else np.float32(0)


def scaled_sign_decode(bits, scales, layout, out, weight=1.0, accumulate=False, n_threads=1):
    for b, off, m, valid in layout.blocks():
        a = np.float32(weight) * (np.float32(1) if scales is None else scales[b])
        xb = np.where(_bits_of(bits, off, m)[:valid], a, -a)
        if accumulate:
            out[off : off + valid] += xb
        else:
            out[off : off + valid] = xb


def pack_signs(x, words):
    flags = np.zeros(len(words) * 64, dtype=bool)
    flags[: len(x)] = x >= 0
    words[:] = np.packbits(flags, bitorder="little").view(np.uint64)


def unpack_signs(words, a, out):
    flags = np.unpackbits(words.view(np.uint8), bitorder="little")[: len(out)].astype(bool)
    out[:] = np.where(flags, np.float32(a), -np.float32(a))


def majority_vote(words, out):
    """words: (n, n_words) uint64; a position votes + where at least half the inputs set it."""
    n = words.shape[0]
    counts = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1, bitorder="little").sum(axis=0, dtype=np.int64)
    out[:] = np.packbits(2 * counts >= n, bitorder="little").view(np.uint64)
