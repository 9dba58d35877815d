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

LAMBDA_NORM, LAMBDA_MAX, LAMBDA_MIN, LAMBDA_MSE, LAMBDA_MSE_DEBIAS, LAMBDA_DRIVE = 0, 1, 2, 3, 4, 5
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
        if rule == LAMBDA_DRIVE:
            scales[b], flags = drive_block(y, rng.centred_uniforms(seed, step, key, rank, m))
            _store_bits(bits, off, flags)
            continue
        lam = np.float32(math.sqrt(sumsq) * lambda_factor[b])
        scales[b] = lam
        if rule == LAMBDA_MAX:
            lam = scales[b] = np.abs(y).max()
        elif rule == LAMBDA_MIN:
            lam = scales[b] = min(lam, np.abs(y).max())
        elif rule in (LAMBDA_MSE, LAMBDA_MSE_DEBIAS):
            lam, scales[b] = mse_scale(y, rule == LAMBDA_MSE_DEBIAS)
        tau = lam * rng.centred_uniforms(seed, step, key, rank, m)
        _store_bits(bits, off, (y + tau) >= 0)


def drive_block(y, draws):
    """DRIVE's scale ||y||^2 / ||y||_1 and bits: the signs of y, an exact zero taking the sign of
    its draw."""
    y64 = y.astype(np.float64)
    l1 = float(np.abs(y64).sum())
    return np.float32(float(np.dot(y64, y64)) / l1 if l1 > 0 else 0.0), np.where(y != 0, y, draws) >= 0


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


def segment_abs_means(x, starts, means, n_threads=1):
    """means[s] = the mean |x_j| over segment s, coordinates [starts[s], starts[s + 1]) (summed in
    float64, stored float32): the scales of a model's tensors (compressors/scaled_sign.py)."""
    for s in range(len(starts) - 1):
        total = float(np.sum(np.abs(x[starts[s] : starts[s + 1]]), dtype=np.float64))
        if not math.isfinite(total):
            raise NonFiniteError("vector to encode holds NaN or Inf; fix the gradient (lower the learning rate) "
                                 "before encoding")
        means[s] = total / max(1, starts[s + 1] - starts[s])


def segment_sign_decode(bits, starts, scales, out, weight=1.0, accumulate=False, n_threads=1):
    """out[j] (+)= weight * scales[s] * (2 b_j - 1) over segment s (bits: little-endian words)."""
    flags = np.unpackbits(bits.view(np.uint8), bitorder="little")
    for s in range(len(starts) - 1):
        a = np.float32(weight) * scales[s]
        xs = np.where(flags[starts[s] : starts[s + 1]], a, -a)
        if accumulate:
            out[starts[s] : starts[s + 1]] += xs
        else:
            out[starts[s] : starts[s + 1]] = xs


def segment_sign_aggregate(payloads, scales_offset, weights, starts, out, n_threads=1):
    """The server's sum of per-segment scaled-sign payload rows (n, nbytes) uint8: out[j] = sum_i
    weights[i] scale_i[s] (2 b_ij - 1) over segment s, rows added in order (row 0 decoded, the
    others accumulated)."""
    n_segments = len(starts) - 1
    for i, row in enumerate(payloads):
        scales = row[scales_offset : scales_offset + 4 * n_segments].view(np.float32)
        segment_sign_decode(row[:scales_offset].view(np.uint64), starts, scales, out, weights[i], accumulate=i > 0)


def qsgd_width(levels):
    """Bits a QSGD code takes: a sign and ceil(log2(levels + 1)) level bits."""
    return 1 + math.ceil(math.log2(levels + 1))


def qsgd_encode(x, layout, levels, seed, step, rank, codes, norms, n_threads=1):
    """compressors.qsgd.QSGD's payload: per coordinate min(floor(levels |x_j| / ||x_b||_2 + u_j),
    levels) << 1 | [x_j < 0] in qsgd_width(levels) bits, coordinate-major, little-endian, over the
    padded length (padding codes 0); one float32 ||x_b||_2 per block in norms."""
    code = np.zeros(layout.padded, dtype=np.uint16)
    for b, off, m, valid in layout.blocks():
        xb = x[off : off + valid].astype(np.float64)
        norm = np.float32(math.sqrt(_finite_sumsq(xb, "vector to encode")))
        words = rng.stream_words(rng.stream_key(seed, step, int(layout.block_ids[b]), rank, rng.PURPOSE_QSGD), valid)
        u = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
        level = np.floor(levels * np.abs(xb) / norm + u) if norm > 0 else np.zeros(valid)
        code[off : off + valid] = (np.minimum(level, levels).astype(np.uint16) << 1) | (xb < 0)
        norms[b] = norm
    planes = (code[:, None] >> np.arange(qsgd_width(levels), dtype=np.uint16)) & 1
    codes.view(np.uint8)[:] = np.packbits(planes.astype(np.uint8).ravel(), bitorder="little")


def qsgd_decode(codes, norms, layout, levels, out, weight=1.0, accumulate=False, n_threads=1):
    width = qsgd_width(levels)
    planes = np.unpackbits(codes.view(np.uint8), bitorder="little")[: layout.padded * width]
    code = (planes.reshape(-1, width).astype(np.uint32) << np.arange(width, dtype=np.uint32)).sum(1)
    values = (code >> 1).astype(np.float32) / np.float32(levels)
    values = np.where(code & 1, -values, values) * np.repeat(norms, layout.sizes)
    xb = np.float32(weight) * values[: layout.d]
    if accumulate:
        out[: layout.d] += xb
    else:
        out[: layout.d] = xb


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


# ---------------------------------------------------------------- the server's scale (--server-scale)
#
# A block v (length m) quantized with scale lam and dither tau_j ~ U[-lam, lam]: b_j = [v_j + tau_j >= 0],
# q_j = lam (2 b_j - 1). With a_j = |v_j|:
#   a_j <= lam: P(b_j = 1) = (lam + v_j) / (2 lam), so E q_j = v_j and E (q_j - v_j)^2 = lam^2 - v_j^2;
#   a_j >  lam: b_j = [v_j > 0] whatever tau_j is (clipped, no randomness left), q_j = lam sign(v_j),
#               so (q_j - v_j)^2 = (a_j - lam)^2 exactly.
# The block's expected squared error F(lam) = sum_{a_j <= lam} (lam^2 - a_j^2) + sum_{a_j > lam} (a_j - lam)^2 is
# continuous and convex: each term has derivative -2 (a_j - lam) below a_j, 2 lam above it (a jump up of 2 a_j at
# a_j), so F'(lam) = 2 (m lam - sum_{a_j > lam} a_j) is nondecreasing. On the segment [a_(k), a_(k+1)] of the sorted
# a (k coordinates unclipped, T_k = sum_{j > k} a_(j)) F = m lam^2 - 2 lam T_k + sum a^2 - 2 sum_{j <= k} a_(j)^2, a
# parabola with vertex T_k / m; the minimum of F is the least of the m + 1 vertices clipped to their segments. At the
# optimum lam* = (1/m) sum_{a_j > lam*} a_j: it clips on purpose (for Gaussian v, lam* = 0.61 sigma and half the
# coordinates clip), trading the dither's variance for a bias towards zero of the large coordinates.
#
# The gain. With lam fixed, the output scale s = g lam that minimizes E||g q - v||^2 is
# g_v = <E q, v> / E||q||^2 = (sum_{a_j <= lam} a_j^2 + lam sum_{a_j > lam} a_j) / (m lam^2), and at lam* this is
# 1 + sum_{a_j <= lam*} a_j^2 / (m lam*^2) >= 1: against v itself the best gain undoes part of the clipping, it never
# shrinks. What shrinks is the gain against what v estimates, the workers' mean y_bar: v = y_bar + uplink noise whose
# expected squared norm the server can bound from the workers' scales alone, N = sum_i w_i^2 (m lam_i^2 - ||y_i||^2)
# <= sum_i w_i^2 m lam_i^2 (unclipped uplink). The James-Stein factor (1 - N / ||v||^2)_+ estimates
# ||y_bar||^2 / ||v||^2, and the shrink gain is g = min(1, g_v (1 - N / ||v||^2)_+): the decoded direction is then
# biased towards zero (a shrinkage estimator) in exchange for a smaller squared error against y_bar.
#
# The debias gain. lam* itself shrinks: where the uplink noise dominates v (v_j = y_j + noise of spread sigma >> |y_j|),
# d E[clip(v_j, lam)] / d y_j = P(|v_j| <= lam), so E[x_hat] ~ (k/m) y_bar with k the unclipped count (about half the
# block): the benchmark measures <E x_hat, mean> / ||mean||^2 = 0.49 at n = 8. The gain g = m / k restores a unit
# gain along the mean to first order; the noise it scales up with it is still far below eta's (same noise-to-signal
# as mse and mse-shrink, which differ from it only by a scalar per block). The approximation needs a smooth spread
# of v: from about 8 workers it gives 0.94-1.16 along the mean; with 2-4 workers v takes a few discrete levels
# and it overshoots (1.1 at n = 2, 1.7 at n = 4 in benchmarks/fo_sgd_variance.py).


def mse_lambda(v):
    """The scale lam >= 0 minimizing F(lam) (above) for one block v, exactly, and F there (float64)."""
    a = np.sort(np.abs(np.asarray(v, dtype=np.float64)))
    m = a.size
    s1 = np.concatenate([[0.0], np.cumsum(a)])
    s2 = np.concatenate([[0.0], np.cumsum(a * a)])
    tail = s1[-1] - s1  # tail[k]: sum of the m - k largest a, the clipped ones when k are unclipped
    lam = np.clip(tail / m, np.concatenate([[0.0], a]), np.concatenate([a, [np.inf]]))
    f = m * lam * lam - 2 * lam * tail + s2[-1] - 2 * s2
    k = int(np.argmin(f))
    return float(lam[k]), float(max(f[k], 0.0))


def quantization_mse(v, lam):
    """F(lam): the expected squared error of quantizing v with scale lam and dither U[-lam, lam]."""
    a = np.abs(np.asarray(v, dtype=np.float64))
    return float(np.sum(np.where(a <= lam, lam * lam - a * a, (a - lam) ** 2)))


def clipping_gain(v, lam):
    """g_v = <E q, v> / E||q||^2 for one block: the gain minimizing E||g q - v||^2 (>= 1 at lam = mse_lambda)."""
    a = np.abs(np.asarray(v, dtype=np.float64))
    if lam <= 0:
        return 1.0
    return float(np.sum(np.where(a <= lam, a * a, lam * a)) / (a.size * lam * lam))


def unclipped_count(v, lam):
    """How many |v_j| lam leaves unclipped (a relative 1e-9 allowance: a block of equal |v_j|, one
    worker's payload, has lam* = |v_j| up to rounding and is quantized exactly)."""
    return int(np.count_nonzero(np.abs(np.asarray(v, dtype=np.float64)) <= lam * (1 + 1e-9)))


def mse_scales(v, layout, lams, unclipped, norms, n_threads=1):
    """Per block of `layout` (the flat layout of a server's sum v, float32): lams[b] = mse_lambda,
    unclipped[b] = unclipped_count there, norms[b] = ||v_b||_2. Fills the three arrays (float64,
    int64, float64); the native kernel finds the same lam by a bracketed search instead of a sort."""
    for b, off, m, _ in layout.blocks():
        vb = np.asarray(v[off : off + m], dtype=np.float64)
        norms[b] = math.sqrt(_finite_sumsq(vb, "the server's sum"))
        lams[b] = mse_lambda(vb)[0]
        unclipped[b] = unclipped_count(vb, lams[b])


def server_gains(v, layout, lams, unclipped, shrink_noise=None, debias=False):
    """Per block, the gain the server folds into the float it sends with scale lams[b]: 1; with
    `shrink_noise` (per block, the bound N on the uplink noise's expected squared norm)
    min(1, g_v (1 - N / ||v_b||^2)_+); with `debias`, m / (unclipped count)."""
    gains = np.ones(layout.n_blocks)
    if shrink_noise is not None:
        for b, off, m, _ in layout.blocks():
            vb = np.asarray(v[off : off + m], dtype=np.float64)
            sq = float(np.dot(vb, vb))
            js = max(0.0, 1.0 - float(shrink_noise[b]) / sq) if sq > 0 else 0.0
            gains[b] = min(1.0, clipping_gain(vb, lams[b]) * js)
    elif debias:
        gains = np.where(lams > 0, layout.sizes / np.maximum(1, unclipped), 1.0)
    return gains


def mse_scale(y, debias):
    """The MSE rules of encode_1bit on one block y (every coordinate real): the dither's scale, lam*
    as the "norm" rule gives it for the factor lam* / ||y|| (float32), and the float sent, that
    times the debias gain m / (unclipped count) or 1."""
    norm = math.sqrt(_finite_sumsq(y, "vector to encode"))
    lam = mse_lambda(y)[0]
    dither = np.float32(norm * (lam / norm if norm > 0 else 0.0))
    gain = y.size / max(1, unclipped_count(y, lam)) if debias and lam > 0 else 1.0
    return dither, np.float32(float(dither) * gain)


def server_scales(v, layout, shrink_noise=None, debias=False, mse_scales=mse_scales, n_threads=1):
    """Per block of `layout`: (lam*, gain, ||v_b||), as the server computes them (`mse_scales`, this
    module's or a native twin, then server_gains)."""
    lams, unclipped, norms = np.zeros(layout.n_blocks), np.zeros(layout.n_blocks, np.int64), np.zeros(layout.n_blocks)
    mse_scales(np.ascontiguousarray(v[: layout.padded], dtype=np.float32), layout, lams, unclipped, norms, n_threads)
    return lams, server_gains(v, layout, lams, unclipped, shrink_noise, debias), norms
