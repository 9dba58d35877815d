"""The codec on torch tensors, wherever they live (CPU, CUDA): the functions and signatures of
fobsgd_mpi.reference, plus QSGD and top-k, so a GPU gradient is compressed on its own device.

    >>> import torch
    >>> from fobsgd_mpi import torch_codec
    >>> torch_codec.fwht_(torch.ones(8))[:2]
    tensor([2.8284, 0.0000])

Arrays become tensors on one device; layouts stay BlockLayouts. Wire words are int64 tensors
holding the uint64 bits (uint64 tensors are accepted too), little-endian within a word like the
reference's, so a payload is byte-for-byte what the numpy and native kernels produce.

The random streams are rng.py's generator in int64 arithmetic: products and sums wrap mod 2^64
as uint64's do, and right shifts are masked to be logical, so every device draws the same signs,
dither and tie bits. Equality with the other backends:
  - bits, lambdas, aggregated sums, fwht_, sign and scaled sign (an exact zero, +0 or -0, takes
    the --sign-ties rule's bit), majority vote (a tie likewise), QSGD codes and decoded values:
    bit-identical to the reference (same operations in the same order), except that sums of
    squares or of |x| over a block run in float64 in torch's own order (as numpy and the native
    kernels each use theirs): the float32 scale rounded from them is the same unless the sums,
    which differ by about 1e-14 relatively, straddle a float32 rounding boundary (steps of about
    1e-7), i.e. in about one block in 10^6. Replicas still agree: every rank decodes
    the one payload the server sent, and decoding gives the same bits everywhere (next point);
  - decode_1bit with rotation: bit-identical to native decode_1bit (and to the CUDA kernel's
    formula), within 1e-5 of the reference (see there);
  - top-k: the same indices unless magnitudes tie at the k-th largest.
Run these eagerly: torch.compile may fuse lambda * u + y into one FMA and change bits.
n_threads is accepted for the signature's sake: torch chooses its own threads.

On a GPU tensor, fwht_ (float32), encode_1bit, decode_1bit and aggregate_1bit run the CUDA kernels
(native/cuda/, fobsgd_mpi._native_cuda) when they are built: the same bits as above, the sums of
squares again in their own order (native.backend_for(x) says "cuda"). Otherwise, and for every
other function, the torch operations below run on the tensor's device.
"""
import itertools
import math

import numpy as np
import torch

from . import native, rng
from .errors import NonFiniteError
from .reference import (LAMBDA_DRIVE, LAMBDA_MAX, LAMBDA_MIN, LAMBDA_MSE,  # noqa: F401  (re-exported)
                        LAMBDA_MSE_DEBIAS, LAMBDA_NORM, TIES_POSITIVE, TIES_RANDOM)
from .reference import qsgd_width


def _signed(v):
    """The int64 with the bits of the uint64 v (a Python int)."""
    v &= rng.MASK
    return v - (1 << 64) if v >> 63 else v


GOLDEN, _MUL1, _MUL2 = _signed(rng.GOLDEN), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


# ---------------------------------------------------------------- counter-based streams (rng.py)
def _shr(z, s):
    """Logical right shift of int64 tensors read as uint64 (torch's >> copies the sign bit)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z):
    """rng.mix64 on an int64 tensor of uint64 bits."""
    z = (z ^ _shr(z, 30)) * _MUL1
    z = (z ^ _shr(z, 27)) * _MUL2
    return z ^ _shr(z, 31)


def stream_keys(seed, step, blocks, rank, purpose):
    """rng.stream_key for each block id of the int64 tensor `blocks`; the (seed, step) part every
    block shares is hashed once on the host."""
    k = rng.mix64(((rng.mix64(seed) ^ step) + rng.GOLDEN) & rng.MASK)
    k = mix64((blocks ^ _signed(k)) + GOLDEN)
    for v in (rank, purpose):
        k = mix64((k ^ _signed(v)) + GOLDEN)
    return k


def stream_words(keys, count):
    """(len(keys), count): words 0 .. count - 1 of each stream (rng.stream_words)."""
    counters = torch.arange(1, count + 1, dtype=torch.int64, device=keys.device)
    return mix64(keys[:, None] + counters * GOLDEN)


def shared_bits(seed, step, blocks, m, purpose):
    """(len(blocks), m) bool from the streams every rank shares (rng.shared_bits)."""
    keys = stream_keys(seed, step, blocks, rng.SHARED_RANK, purpose)
    return unpack_bits(stream_words(keys, (m + 63) // 64))[:, :m]


def rademacher_flips(seed, step, blocks, m):
    """(len(blocks), m) bool, True where the shared diagonal D has -1 (rng.rademacher_flips)."""
    return shared_bits(seed, step, blocks, m, rng.PURPOSE_SIGN)


def centred_uniforms(seed, step, blocks, rank, m):
    """(len(blocks), m) float32 odd multiples of 2^-24 in (-1, 1) (rng.centred_uniforms)."""
    words = stream_words(stream_keys(seed, step, blocks, rank, rng.PURPOSE_DITHER), (m + 1) // 2)
    r = words.view(torch.int32)[:, :m].long() & 0xFFFFFFFF  # little-endian: coordinate 2k is the low half of word k
    return ((r >> 8) * 2 + 1 - (1 << 24)).float() * (1.0 / 16777216.0)


# ---------------------------------------------------------------- bits on the wire
def unpack_bits(words):
    """(..., n) words (any integer type) -> (..., n * bits per word) bool, in wire order: bit j of
    byte k is coordinate 8k + j."""
    b = words.view(torch.uint8)
    return ((b[..., None] >> torch.arange(8, dtype=torch.uint8, device=b.device)) & 1).bool().flatten(-2)


def pack_bits(flags):
    """(..., 64 n) bool -> (..., n) int64 words; the inverse of unpack_bits."""
    shifts = torch.arange(8, dtype=torch.uint8, device=flags.device)
    return (flags.unflatten(-1, (-1, 8)).to(torch.uint8) << shifts).sum(-1, dtype=torch.uint8).view(torch.int64)


def _store_bits(words, flags):
    """Pack `flags` into `words`, cut to the words it holds (a plain sign payload ends at
    ceil(d / 64) words, before the padded length)."""
    words.view(torch.int64).copy_(pack_bits(flags[: 64 * words.shape[-1]]))


# ---------------------------------------------------------------- layout helpers
def _runs(layout):
    """(first block, end block, offset, size) per run of consecutive equal-size blocks (all the
    full blocks form one): the transform and the streams are batched over a run."""
    sizes, out = layout.sizes.tolist(), []
    for m, group in itertools.groupby(range(layout.n_blocks), key=sizes.__getitem__):
        group = list(group)
        out.append((group[0], group[-1] + 1, int(layout.offsets[group[0]]), m))
    return out


def _run_view(v, run):
    b0, b1, off, m = run
    return v[off : off + (b1 - b0) * m].view(b1 - b0, m)


def _block_sums(v, layout):
    """Sum of v over each block (float64 v: the order is torch's, see the module's note)."""
    return torch.cat([_run_view(v, run).sum(1) for run in _runs(layout)])


def _per_coordinate(per_block, layout):
    sizes = torch.as_tensor(layout.sizes, device=per_block.device)
    return per_block.repeat_interleave(sizes, output_size=layout.padded)


def _padded(x, layout):
    xp = x.new_zeros(layout.padded)
    xp[: layout.d] = x[: layout.d]
    return xp


def _require_finite(ok, what):
    if not bool(ok):  # one host sync per call
        raise NonFiniteError(f"{what} holds NaN or Inf; fix the gradient (lower the learning rate) before encoding")


def _f32(v):
    """A Python number as the float32 (CPU scalar tensor, usable with any device) the numpy and
    native kernels compute with."""
    return torch.tensor(v, dtype=torch.float32)


def _write(out, x, accumulate):
    """out[:len(x)] = x, or += with `accumulate`."""
    if accumulate:
        out[: len(x)] += x
    else:
        out[: len(x)] = x


# ---------------------------------------------------------------- the CUDA kernels
def _cuda_kernels(x):
    """fobsgd_mpi._native_cuda when x is a GPU tensor and the kernels are built, else None."""
    return native.cuda_extension() if x.is_cuda else None


def _address(t, dtype, numel, device, what):
    """t's device address after checking what the kernel will read or write there."""
    if t.device != device or t.dtype not in dtype or not t.is_contiguous() or t.numel() < numel:
        raise ValueError(f"{what} must be a contiguous {'/'.join(map(str, dtype))} tensor on {device} with at least "
                         f"{numel} elements, got {t.dtype} {tuple(t.shape)} on {t.device}")
    return t.data_ptr()


def _launch(kernel, what, device, *args):
    """Run one CUDA kernel call on `device`'s current stream; a launch error becomes a RuntimeError."""
    with torch.cuda.device(device):
        status = kernel(*args, torch.cuda.current_stream(device).cuda_stream)
    if status:
        raise RuntimeError(f"{what}: CUDA error {status} ({native.cuda_extension().error_string(status)})")


WORDS = (torch.int64, torch.uint64)
F32 = (torch.float32,)


# ---------------------------------------------------------------- transform
def fwht_(x, normalize=True):
    """In-place Walsh-Hadamard transform over the last axis of a contiguous float32 / float64
    tensor; orthonormal if `normalize`. The reference's stages (stride 1, 2, 4, ..., each a+b and
    a-b) scaled last, each stage batched over all rows: the same bits as reference.fwht_."""
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"fwht_ needs a float32 or float64 tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not x.is_contiguous():
        raise ValueError("fwht_ works in place: pass a contiguous tensor (x.contiguous())")
    n = x.shape[-1] if x.dim() else 0
    if n < 1 or n & (n - 1) or n > 1 << 30:
        raise ValueError(f"fwht_ needs a power-of-two last axis up to 2^30, got length {n}")
    cuda = _cuda_kernels(x)
    if cuda is not None and x.dtype == torch.float32:
        scale = 1.0 / math.sqrt(n) if normalize and n > 1 else 1.0
        _launch(cuda.fwht_f32, "fwht_", x.device, x.data_ptr(), x.numel() // n, n.bit_length() - 1, scale)
        return x
    h = 1
    while h < n:
        v = x.view(-1, n // (2 * h), 2, h)
        a, b = v[:, :, 0], v[:, :, 1]
        old_a = a.clone()
        a += b
        torch.sub(old_a, b, out=b)
        h *= 2
    if normalize and n > 1:
        x *= torch.tensor(1.0 / math.sqrt(n), dtype=x.dtype)
    return x


# ---------------------------------------------------------------- one-bit dithered codec
def encode_1bit(x, layout, rotate, rule, lambda_factor, seed, step, rank, bits, scales, n_threads=1):
    """reference.encode_1bit on tensors: x float32 (length layout.d); bits (n_words) and scales
    (n_blocks, float32) on x's device. Raises NonFiniteError for NaN or Inf in x. The MSE rules
    and DRIVE run on the torch path (the CUDA kernels have none)."""
    cuda = _cuda_kernels(x) if rule not in (LAMBDA_MSE, LAMBDA_MSE_DEBIAS, LAMBDA_DRIVE) else None
    if cuda is not None:
        work = torch.empty(layout.padded, dtype=torch.float32, device=x.device)
        sumsq = torch.empty(layout.n_blocks, dtype=torch.float64, device=x.device)
        ids = torch.as_tensor(layout.block_ids, device=x.device)
        factors = torch.as_tensor(lambda_factor, dtype=torch.float64, device=x.device)
        x = x.contiguous()
        _launch(cuda.encode_1bit, "encode_1bit", x.device, _address(x, F32, layout.d, x.device, "x"), layout.offsets,
                layout.log_sizes, layout.d, ids.data_ptr(), int(rotate), rule, factors.data_ptr(), seed, step, rank,
                work.data_ptr(), sumsq.data_ptr(), _address(bits, WORDS, layout.n_words, x.device, "bits"),
                _address(scales, F32, layout.n_blocks, x.device, "scales"))
        _require_finite(torch.isfinite(sumsq).all(), "vector to encode")
        return
    xp = _padded(x, layout)
    ids = torch.as_tensor(layout.block_ids, device=x.device)
    factors = torch.as_tensor(lambda_factor, dtype=torch.float64, device=x.device)
    sumsq = _block_sums(xp.double().square(), layout)
    _require_finite(torch.isfinite(sumsq).all(), "vector to encode")
    flags = torch.empty(layout.padded, dtype=torch.bool, device=x.device)
    for run in _runs(layout):
        b0, b1, _, m = run
        y = _run_view(xp, run)
        if rotate:
            y = torch.where(rademacher_flips(seed, step, ids[b0:b1], m), -y, y)
            fwht_(y)
        if rule == LAMBDA_DRIVE:
            y64 = y.double()
            l1 = y64.abs().sum(1)
            scales[b0:b1] = torch.where(l1 > 0, y64.square().sum(1) / l1, 0.0).float()
            draws = centred_uniforms(seed, step, ids[b0:b1], rank, m)
            _run_view(flags, run)[:] = torch.where(y != 0, y, draws) >= 0
            continue
        lam = (sumsq[b0:b1].sqrt() * factors[b0:b1]).float()
        scales[b0:b1] = lam
        if rule in (LAMBDA_MSE, LAMBDA_MSE_DEBIAS):
            lam, scales[b0:b1] = _mse_scales(y, rule == LAMBDA_MSE_DEBIAS)
        elif rule != LAMBDA_NORM:
            peak = y.abs().amax(1)
            lam = scales[b0:b1] = peak if rule == LAMBDA_MAX else torch.minimum(lam, peak)
        tau = lam[:, None] * centred_uniforms(seed, step, ids[b0:b1], rank, m)
        _run_view(flags, run)[:] = (y + tau) >= 0
    _store_bits(bits, flags)


def _mse_scales(y, debias):
    """reference.mse_scale for each row of y (blocks of m coordinates): (the dither's scale, the
    float sent), float32. lam* as reference.mse_lambda finds it: the least of the m + 1 clipped
    parabola vertices over the sorted |y|."""
    a = y.double().abs().sort(dim=1).values
    m = a.shape[1]
    zero = a.new_zeros(a.shape[0], 1)
    s1, s2 = torch.cat([zero, a.cumsum(1)], 1), torch.cat([zero, (a * a).cumsum(1)], 1)
    tail = s1[:, -1:] - s1
    lam = torch.minimum(torch.maximum(tail / m, torch.cat([zero, a], 1)), torch.cat([a, zero + math.inf], 1))
    f = m * lam * lam - 2 * lam * tail + s2[:, -1:] - 2 * s2
    lam = lam.gather(1, f.argmin(1, keepdim=True)).squeeze(1)
    norm = y.double().square().sum(1).sqrt()
    dither = (norm * torch.where(norm > 0, lam / norm, 0.0)).float()
    gain = torch.ones_like(lam)
    if debias:
        unclipped = (a <= (lam * (1 + 1e-9))[:, None]).sum(1).clamp(min=1)
        gain = torch.where(lam > 0, m / unclipped, 1.0)
    return dither, (dither.double() * gain).float()


def decode_1bit(bits, scales, layout, rotate, seed, step, out, weight=1.0, accumulate=False, n_threads=1):
    """x_hat = D H (scale (2b - 1)) per block, truncated to layout.d, written to (or with
    `accumulate` added to) out[:d] times `weight`.

    With rotation this follows the native and CUDA kernels, not the reference: the transform runs
    on the exact +-1 (every partial sum an integer, exact in float32 up to 2^24 coordinates in any
    order), then one float32 multiply by weight * scale / sqrt(m) rounded once from float64. So a
    GPU replica decodes to the same bits as a CPU one with native kernels. The reference
    transforms +-scale and rounds at each stage: it agrees within rtol 1e-5.
    """
    cuda = _cuda_kernels(out)
    if cuda is not None:
        work = torch.empty(layout.padded, dtype=torch.float32, device=out.device)
        ids = torch.as_tensor(layout.block_ids, device=out.device)
        _launch(cuda.decode_1bit, "decode_1bit", out.device,
                _address(bits, WORDS, layout.n_words, out.device, "bits"),
                _address(scales, F32, layout.n_blocks, out.device, "scales"), layout.offsets, layout.log_sizes,
                layout.d, ids.data_ptr(), int(rotate), seed, step, float(weight), bool(accumulate), work.data_ptr(),
                _address(out, F32, layout.d, out.device, "out"))
        return
    q = torch.where(unpack_bits(bits)[: layout.padded], 1.0, -1.0).to(torch.float32)
    if not rotate:
        _write(out, _f32(weight) * (q * _per_coordinate(scales, layout))[: layout.d], accumulate)
        return
    ids = torch.as_tensor(layout.block_ids, device=q.device)
    for run in _runs(layout):
        b0, b1, _, m = run
        y = fwht_(_run_view(q, run), normalize=False)
        y *= (_f32(weight).double() * scales[b0:b1, None].double() / math.sqrt(m)).float()
        y.copy_(torch.where(rademacher_flips(seed, step, ids[b0:b1], m), -y, y))
    _write(out, q[: layout.d], accumulate)


def aggregate_1bit(payloads, scales_offset, weights, layout, out, n_threads=1):
    """sum_i weights[i] scale_i (2 b_i - 1) over the padded length, from gathered payload rows
    (n, nbytes) uint8, into out[:padded]. Rows are added in rank order, as the reference and
    native kernels do, so the sums are bit-identical to theirs."""
    cuda = _cuda_kernels(payloads)
    if cuda is not None:
        rows = payloads.contiguous()
        w = torch.as_tensor(weights, dtype=torch.float32, device=rows.device)
        if rows.dtype != torch.uint8 or rows.dim() != 2 or rows.shape[1] < scales_offset + 4 * layout.n_blocks:
            raise ValueError(f"payloads must be (n, >= {scales_offset + 4 * layout.n_blocks}) uint8 rows, got "
                             f"{rows.dtype} {tuple(rows.shape)}")
        _launch(cuda.aggregate_1bit, "aggregate_1bit", rows.device, rows.data_ptr(), rows.shape[0], rows.shape[1],
                scales_offset, _address(w, F32, rows.shape[0], rows.device, "weights"), layout.offsets,
                layout.log_sizes, layout.d, _address(out, F32, layout.padded, rows.device, "out"))
        return
    scales = payloads[:, scales_offset : scales_offset + 4 * layout.n_blocks].contiguous().view(torch.float32)
    c = torch.as_tensor(weights, dtype=torch.float32, device=payloads.device)[:, None] * scales
    acc = torch.zeros(layout.padded, dtype=torch.float32, device=payloads.device)
    for i in range(payloads.shape[0]):
        ci = _per_coordinate(c[i], layout)
        acc += torch.where(unpack_bits(payloads[i, :scales_offset])[: layout.padded], ci, -ci)
    out[: layout.padded] = acc


# ---------------------------------------------------------------- sign, scaled sign, vote
def _tie_flags(ties, seed, step, layout, purpose, n, device):
    """The side an exact zero or a tied vote takes at the first n padded coordinates: + everywhere
    (TIES_POSITIVE), or else bit j of the block's shared stream of `purpose`, under the block's
    id (reference._tie_flags, all blocks at once)."""
    if ties == TIES_POSITIVE:
        return torch.ones(n, dtype=torch.bool, device=device)
    ids = torch.as_tensor(layout.block_ids, device=device)
    return torch.cat([shared_bits(seed, step, ids[b0:b1], m, purpose).flatten() for b0, b1, _, m in _runs(layout)])[:n]


def scaled_sign_encode(x, layout, ties, seed, step, bits, scales, n_threads=1):
    """reference.scaled_sign_encode: sign bits of x[:d] (an exact zero, +0 or -0, by the `ties`
    rule; bits past d 0) and ||x_b||_1 / valid_b per block into `scales` (None: plain sign, and
    `bits` may end at ceil(d / 64) words)."""
    d = layout.d
    l1 = _block_sums(_padded(x, layout).double().abs(), layout)
    _require_finite(torch.isfinite(l1).all(), "vector to encode")
    flags = torch.zeros(layout.padded, dtype=torch.bool, device=x.device)
    zero = _tie_flags(ties, seed, step, layout, rng.PURPOSE_ZERO_SIGN, d, x.device)
    flags[:d] = (x[:d] > 0) | ((x[:d] == 0) & zero)
    _store_bits(bits, flags)
    if scales is not None:
        valid = torch.as_tensor(layout.valid, device=x.device)
        scales[:] = torch.where(valid > 0, l1 / valid, 0.0).float()


def scaled_sign_decode(bits, scales, layout, out, weight=1.0, accumulate=False, n_threads=1):
    """+-weight * scale_b (or +-weight with scales None) into out[:d]."""
    flags = unpack_bits(bits)[: layout.d]
    w = _f32(weight)
    a = w.to(flags.device).expand(layout.n_blocks) if scales is None else w * scales
    a = _per_coordinate(a, layout)[: layout.d]
    _write(out, torch.where(flags, a, -a), accumulate)


def segment_abs_means(x, starts, means, n_threads=1):
    """reference.segment_abs_means (summed in float64 in torch's order)."""
    lengths = torch.as_tensor(np.diff(starts), device=x.device)
    total = torch.segment_reduce(x[: int(starts[-1])].double().abs(), "sum", lengths=lengths)
    _require_finite(torch.isfinite(total).all(), "vector to encode")
    means[:] = (total / lengths.clamp(min=1)).float()


def segment_sign_decode(bits, starts, scales, out, weight=1.0, accumulate=False, n_threads=1):
    """reference.segment_sign_decode: +-weight * scales[s] over segment s into out."""
    d = int(starts[-1])
    flags = unpack_bits(bits)[:d]
    a = (_f32(weight).to(flags.device) * scales).repeat_interleave(
        torch.as_tensor(np.diff(starts), device=flags.device), output_size=d)
    _write(out, torch.where(flags, a, -a), accumulate)


def segment_sign_aggregate(payloads, scales_offset, weights, starts, out, n_threads=1):
    """reference.segment_sign_aggregate: the rows decoded in order, the first stored, the rest added."""
    n_segments = len(starts) - 1
    for i in range(payloads.shape[0]):
        scales = payloads[i, scales_offset : scales_offset + 4 * n_segments].contiguous().view(torch.float32)
        segment_sign_decode(payloads[i, :scales_offset], starts, scales, out, float(weights[i]), accumulate=i > 0)


def majority_vote(words, layout, ties, seed, step, out):
    """words: (n, n_words) with n_words up to layout.n_words; a position votes + where more than
    half the inputs set it, and where exactly half do (n even) as the `ties` rule says, drawing
    under each block's id (so a server's shard, a layout subset, votes as the whole would)."""
    n = words.shape[0]
    counts2 = 2 * unpack_bits(words).sum(0)
    flags = counts2 > n
    if n % 2 == 0:
        flags |= (counts2 == n) & _tie_flags(ties, seed, step, layout, rng.PURPOSE_VOTE_TIE, len(flags), words.device)
    _store_bits(out, flags)


# ---------------------------------------------------------------- QSGD and top-k (compressors/)
def qsgd_encode(x, layout, levels, seed, step, rank, codes, norms, n_threads=1):
    """compressors.qsgd.QSGD's payload: per coordinate level << 1 | [x < 0] in qsgd_width(levels)
    bits, coordinate-major, little-endian; one float32 ||x_b||_2 per block in norms."""
    _require_finite(torch.isfinite(x).all(), "vector to encode")
    xp = _padded(x, layout).double()
    ids = torch.as_tensor(layout.block_ids, device=x.device)
    norm = _block_sums(xp.square(), layout).sqrt().float()
    u = torch.cat([_shr(stream_words(stream_keys(seed, step, ids[b0:b1], rank, rng.PURPOSE_QSGD), m), 11).flatten()
                   for b0, b1, _, m in _runs(layout)]).double() * 2.0**-53
    n = _per_coordinate(norm, layout).double()
    level = torch.where(n > 0, torch.floor(levels * xp.abs() / n + u), 0.0).clamp_(max=levels).long()
    width = qsgd_width(levels)
    code = (level << 1) | (xp < 0).long()
    planes = ((code[:, None] >> torch.arange(width, device=x.device)) & 1).bool().flatten()
    flags = torch.zeros(codes.shape[-1] * 64, dtype=torch.bool, device=x.device)
    flags[: len(planes)] = planes
    _store_bits(codes, flags)
    norms[:] = norm


def qsgd_decode(codes, norms, layout, levels, out, weight=1.0, accumulate=False, n_threads=1):
    width = qsgd_width(levels)
    planes = unpack_bits(codes)[: layout.padded * width].view(layout.padded, width).long()
    code = (planes << torch.arange(width, device=planes.device)).sum(1)
    values = (code >> 1).float() / _f32(levels)
    values = torch.where((code & 1).bool(), -values, values) * _per_coordinate(norms, layout)
    _write(out, _f32(weight) * values[: layout.d], accumulate)


def topk_encode(x, k, indices, values):
    """compressors.topk.TopK's payload: the k largest |x_j|, indices ascending."""
    idx = torch.topk(x.abs(), k, sorted=False).indices.sort().values
    indices.copy_(idx)
    values.copy_(x[idx])


def topk_decode(indices, values, d, out, weight=1.0, accumulate=False):
    if not accumulate:
        out[:d] = 0
    out.index_add_(0, indices.long(), _f32(weight) * values)
