"""Every native kernel against its numpy reference, on every instruction set the CPU offers."""
import numpy as np
import pytest

from fobsgd_mpi import arrays, native, reference, rng
from fobsgd_mpi.errors import NonFiniteError
from fobsgd_mpi.layout import BlockLayout

SIZES = [1, 63, 64, 300, 4096, 70_001, 1_000_003]


def layout_for(d):
    return BlockLayout(d, max_block=1 << 14 if d > 100_000 else 1 << 10, min_block=64 if d < 5000 else 256)


def encode_both(x, lay, rotate, rule, seed=7, step=3, rank=2):
    factors = np.sqrt(2 * np.log(2 * lay.sizes / 1e-2) / lay.sizes)
    out = []
    for k in (native, reference):
        bits, scales = np.zeros(lay.n_words, np.uint64), np.zeros(lay.n_blocks, np.float32)
        k.encode_1bit(x, lay, rotate, rule, factors, seed, step, rank, bits, scales)
        out.append((bits, scales))
    return out


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("rotate", [True, False])
@pytest.mark.parametrize("rule", [native.LAMBDA_NORM, native.LAMBDA_MAX, native.LAMBDA_MIN, native.LAMBDA_MSE,
                                  native.LAMBDA_MSE_DEBIAS, native.LAMBDA_DRIVE])
def test_encode_identical_bits_and_scales(isa, d, rotate, rule, gen):
    x = gen.standard_normal(d).astype(np.float32)
    lay = layout_for(d)
    (bn, sn), (br, sr) = encode_both(x, lay, rotate, rule)
    assert np.array_equal(sn, sr)
    assert np.array_equal(bn, br)


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("rotate", [True, False])
def test_decode_allclose_and_accumulates(isa, d, rotate, gen):
    lay = layout_for(d)
    bits = gen.integers(0, 2**63, lay.n_words, dtype=np.uint64)
    scales = gen.random(lay.n_blocks, dtype=np.float32) + 0.1
    outs = []
    for k in (native, reference):
        out = np.full(d, 0.5, dtype=np.float32)
        k.decode_1bit(bits, scales, lay, rotate, 7, 3, out, weight=0.25, accumulate=True)
        outs.append(out)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    fresh = np.zeros(d, dtype=np.float32)
    native.decode_1bit(bits, scales, lay, rotate, 7, 3, fresh, weight=0.25)
    np.testing.assert_allclose(fresh + 0.5, outs[0], rtol=1e-6, atol=1e-6)


def test_decode_inverts_encode_of_its_own_bits(gen):
    """Encoding a vector that is exactly +-lambda in the flattened domain is lossless."""
    lay = BlockLayout(4096, 1024, 256)
    q = np.where(gen.random(lay.padded) < 0.5, -1.0, 1.0).astype(np.float32)
    bits = np.packbits(q > 0, bitorder="little").view(np.uint64)
    x = np.zeros(4096, np.float32)
    native.decode_1bit(bits, np.ones(lay.n_blocks, np.float32), lay, True, 1, 2, x)
    bits2, scales2 = np.zeros_like(bits), np.zeros(lay.n_blocks, np.float32)
    native.encode_1bit(x, lay, True, native.LAMBDA_MAX, np.ones(lay.n_blocks), 1, 2, 0, bits2, scales2)
    assert np.array_equal(bits, bits2)
    np.testing.assert_allclose(scales2, 1.0, rtol=1e-5)


def payload_rows(lay, n, gen):
    """n one-bit payloads of `lay`: random bits, then a scale per block."""
    nbytes = lay.n_words * 8 + lay.n_blocks * 4
    rows = np.zeros((n, nbytes), dtype=np.uint8)
    rows[:, : lay.n_words * 8] = gen.integers(0, 256, (n, lay.n_words * 8), dtype=np.uint8)
    rows[:, lay.n_words * 8 :].view(np.float32)[:] = gen.random((n, lay.n_blocks), dtype=np.float32)
    return rows


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_aggregate_identical(isa, n, gen):
    lay = layout_for(70_001)
    rows, weights = payload_rows(lay, n, gen), gen.random(n, dtype=np.float32)
    outs = []
    for k in (native, reference):
        out = np.empty(lay.padded, np.float32)
        k.aggregate_1bit(rows, lay.n_words * 8, weights, lay, out)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])


def test_outputs_past_the_cache_are_the_same(isa, gen):
    """From 32 MiB the aggregates write with stores that bypass the caches (into aligned outputs: an
    unaligned one is written normally)."""
    d = (1 << 23) + 1001
    lay = BlockLayout(d, 1 << 16, 256)
    rows, weights = payload_rows(lay, 2, gen), gen.random(2, dtype=np.float32)
    starts = np.append(lay.offsets[: lay.n_blocks], d).astype(np.int64)  # a segment per block
    blocks, segments = [], []
    for k in (native, reference):
        out = arrays.aligned_zeros(lay.padded)
        k.aggregate_1bit(rows, lay.n_words * 8, weights, lay, out)
        blocks.append(out)
        out = arrays.aligned_zeros(d)
        k.segment_sign_aggregate(rows, lay.n_words * 8, weights, starts, out, 1)
        segments.append(out)
    assert np.array_equal(blocks[0], blocks[1])
    assert np.array_equal(segments[0], segments[1])


TIES = [native.TIES_RANDOM, native.TIES_POSITIVE]


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("ties", TIES)
def test_scaled_sign_identical(isa, d, ties, gen):
    lay = layout_for(d)
    x = gen.standard_normal(d).astype(np.float32)
    x[::7] = 0.0
    x[1::11] = -0.0
    res = []
    for k in (native, reference):
        bits, scales = np.zeros(lay.n_words, np.uint64), np.zeros(lay.n_blocks, np.float32)
        k.scaled_sign_encode(x, lay, ties, 9, 4, bits, scales)
        out = np.ones(d, np.float32)
        k.scaled_sign_decode(bits, scales, lay, out, weight=2.0, accumulate=True)
        out2 = np.zeros(d, np.float32)
        k.scaled_sign_decode(bits, None, lay, out2)
        res.append((bits, scales, out, out2))
    for a, b in zip(*res):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("d", [1, 5, 64, 65, 1000, 70_001])
@pytest.mark.parametrize("ties", TIES)
def test_plain_sign_identical(isa, d, ties, gen):
    """Plain sign: scales None, bits of ceil(d / 64) words (the padded last block cut short)."""
    lay = layout_for(d)
    x = gen.standard_normal(d).astype(np.float32)
    x[::3] = 0.0
    words = []
    for k in (native, reference):
        w = np.full((d + 63) // 64, 7, np.uint64)
        k.scaled_sign_encode(x, lay, ties, 9, 4, w, None)
        words.append(w)
    assert np.array_equal(*words)
    flags = np.unpackbits(words[0].view(np.uint8), bitorder="little").astype(bool)
    assert not flags[d:].any() and np.array_equal(flags[:d][x != 0], x[x != 0] > 0)
    if ties == native.TIES_POSITIVE:
        assert flags[:d][x == 0].all()


def test_zeros_take_the_shared_stream_bits(isa):
    """An all-zero vector encodes to exactly the bits of each block's stream (purpose 4) that
    rng.shared_bits draws, so every rank and both backends agree."""
    lay = layout_for(70_001)
    bits = np.zeros(lay.n_words, np.uint64)
    native.scaled_sign_encode(np.zeros(lay.d, np.float32), lay, native.TIES_RANDOM, 9, 4, bits, None)
    got = np.unpackbits(bits.view(np.uint8), bitorder="little").astype(bool)
    for b, off, m, valid in lay.blocks():
        assert np.array_equal(got[off : off + valid], rng.shared_bits(9, 4, b, valid, rng.PURPOSE_ZERO_SIGN))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 33])
@pytest.mark.parametrize("ties", TIES)
def test_majority_vote_identical(isa, n, ties, gen):
    lay = layout_for(4096)
    words = gen.integers(0, 2, (n, lay.n_words * 64), dtype=np.uint8)
    words[:, ::3] = np.arange(n)[:, None] % 2  # n even: a tie in every third position
    words = np.packbits(words, axis=1, bitorder="little").view(np.uint64)
    on, orf = np.zeros(lay.n_words, np.uint64), np.zeros(lay.n_words, np.uint64)
    native.majority_vote(words, lay, ties, 9, 4, on)
    reference.majority_vote(words, lay, ties, 9, 4, orf)
    assert np.array_equal(on, orf)


def test_majority_tie_votes_by_the_rule():
    lay = BlockLayout(64, 64, 64)
    words = np.array([[0b01], [0b10]], dtype=np.uint64)
    out = np.zeros(1, np.uint64)
    native.majority_vote(words, lay, native.TIES_POSITIVE, 0, 0, out)
    assert out[0] == 0b11  # GRACE: sum >= 0
    native.majority_vote(words, lay, native.TIES_RANDOM, 5, 6, out)
    tie = rng.shared_bits(5, 6, 0, 64, rng.PURPOSE_VOTE_TIE)
    assert out[0] == int(tie[0]) | int(tie[1]) << 1


@pytest.mark.parametrize("ties", TIES)
def test_majority_vote_of_a_shard_is_that_of_the_whole(ties, gen):
    """A server voting on its shard (a layout subset, blocks back to back) draws each block's tie
    bits under its id in the whole vector, so the shards' votes are the whole vote cut."""
    lay = BlockLayout(70_001, 1 << 12, 256)
    n_words = (lay.d + 63) // 64
    words = gen.integers(0, 2**63, (4, n_words), dtype=np.uint64)
    whole = np.zeros(n_words, np.uint64)
    native.majority_vote(words, lay, ties, 9, 4, whole)
    blocks = np.arange(1, lay.n_blocks, 3)
    cut = np.concatenate([np.arange(lay.offsets[b] // 64, -(-(lay.offsets[b] + lay.valid[b]) // 64)) for b in blocks])
    part = np.zeros(len(cut), np.uint64)
    native.majority_vote(np.ascontiguousarray(words[:, cut]), lay.subset(blocks), ties, 9, 4, part)
    assert np.array_equal(part, whole[cut])


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("levels", [1, 7, 15, 255, 32767])
def test_qsgd_identical(isa, d, levels, gen):
    """Codes (widths 2..16 bits, so codes straddle words), norms and the decode, accumulating."""
    lay = layout_for(d)
    x = gen.standard_normal(d).astype(np.float32)
    x[::5] = 0.0
    x[1::13] = -0.0
    if d > 300:
        x[:64] = 0.0  # a block whose norm is zero
    width = reference.qsgd_width(levels)
    res = []
    for k in (native, reference):
        codes = np.full(lay.padded * width // 64, 7, np.uint64)  # stale words: the encode overwrites them
        norms = np.zeros(lay.n_blocks, np.float32)
        k.qsgd_encode(x, lay, levels, 9, 4, 2, codes, norms)
        out = np.ones(d, np.float32)
        k.qsgd_decode(codes, norms, lay, levels, out, weight=0.5, accumulate=True)
        res.append((codes, norms, out))
    for a, b in zip(*res):
        assert np.array_equal(a, b)


def test_qsgd_of_a_shard_draws_the_whole_vectors_streams(gen):
    """A layout subset keeps its blocks' ids, so QSGD encodes a shard's blocks as it encodes them
    in the whole vector (the numpy reference used the block's position before)."""
    lay = layout_for(4096)
    x = gen.standard_normal(lay.d).astype(np.float32)
    blocks = np.array([1, 3])
    shard = lay.subset(blocks)
    width = reference.qsgd_width(15)
    for k in (native, reference):
        whole, whole_norms = np.zeros(lay.padded * width // 64, np.uint64), np.zeros(lay.n_blocks, np.float32)
        k.qsgd_encode(x, lay, 15, 9, 4, 2, whole, whole_norms)
        part, part_norms = np.zeros(shard.padded * width // 64, np.uint64), np.zeros(2, np.float32)
        k.qsgd_encode(np.concatenate([x[lay.offsets[b]:lay.offsets[b] + lay.sizes[b]] for b in blocks]), shard, 15,
                      9, 4, 2, part, part_norms)
        words = np.concatenate([np.arange(lay.offsets[b] * width // 64, (lay.offsets[b] + lay.sizes[b]) * width // 64)
                                for b in blocks])
        assert np.array_equal(part, whole[words]) and np.array_equal(part_norms, whole_norms[blocks])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("k", [native, reference])
def test_non_finite_input_refused(k, bad):
    lay = BlockLayout(1000, 256, 64)
    x = np.ones(1000, np.float32)
    x[517] = bad
    bits, scales = np.zeros(lay.n_words, np.uint64), np.zeros(lay.n_blocks, np.float32)
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        k.encode_1bit(x, lay, True, k.LAMBDA_NORM, np.ones(lay.n_blocks), 0, 0, 0, bits, scales)
    with pytest.raises(NonFiniteError):
        k.scaled_sign_encode(x, lay, k.TIES_RANDOM, 0, 0, bits, scales)
    with pytest.raises(NonFiniteError):
        k.qsgd_encode(x, lay, 15, 0, 0, 0, np.zeros(lay.padded * 5 // 64, np.uint64), scales)
    with pytest.raises(NonFiniteError):
        k.segment_abs_means(x, np.array([0, 600, 1000]), np.zeros(2, np.float32))
    with pytest.raises(NonFiniteError):
        k.mse_scales(np.pad(x, (0, lay.padded - 1000)), lay.flat(), *mse_outputs(lay))


SEGMENTS = {"one": [70_001], "model-like": [3000, 64, 64, 60_000, 7, 1, 6865], "ragged": [5, 63, 64, 65, 129, 69_675]}


@pytest.mark.parametrize("segments", SEGMENTS)
def test_segment_kernels_identical(isa, segments, gen):
    """The per-tensor scale (mean |x| per segment) and its decode, at segment edges that fall
    anywhere in a 64-bit word."""
    starts = np.concatenate([[0], np.cumsum(SEGMENTS[segments])]).astype(np.int64)
    d = int(starts[-1])
    x = gen.standard_normal(d).astype(np.float32) * np.repeat(gen.uniform(0.01, 100, len(starts) - 1),
                                                               np.diff(starts)).astype(np.float32)
    means = [np.zeros(len(starts) - 1, np.float32) for _ in range(2)]
    for k, out in zip((native, reference), means):
        k.segment_abs_means(x, starts, out)
    np.testing.assert_allclose(means[0], means[1], rtol=1e-7)
    bits = gen.integers(0, 2**63, (d + 63) // 64, dtype=np.uint64)
    decoded = []
    for k in (native, reference):
        out = np.full(d, 0.5, np.float32)
        k.segment_sign_decode(bits, starts, means[1], out, weight=0.25, accumulate=True)
        fresh = np.zeros(d, np.float32)
        k.segment_sign_decode(bits, starts, means[1], fresh, weight=0.25)
        decoded += [out, fresh]
    signs = np.unpackbits(bits.view(np.uint8), bitorder="little")[:d] * 2.0 - 1
    expected = 0.25 * np.repeat(means[1], np.diff(starts)) * signs
    assert np.array_equal(decoded[0], decoded[2]) and np.array_equal(decoded[1], decoded[3])
    np.testing.assert_allclose(decoded[1], expected, rtol=1e-6)
    np.testing.assert_allclose(decoded[0], 0.5 + expected, rtol=1e-6)


@pytest.mark.parametrize("segments", SEGMENTS)
@pytest.mark.parametrize("threads", [1, 2])
def test_segment_sign_aggregate_identical(isa, segments, threads, gen):
    """The server's sum of per-tensor scaled-sign rows: the fused kernel, the numpy twin (a decode
    per row) and the torch twin give the same bits, -0.0 of a zero scale included."""
    import torch

    from fobsgd_mpi import torch_codec

    starts = np.concatenate([[0], np.cumsum(SEGMENTS[segments])]).astype(np.int64)
    d, n_segments = int(starts[-1]), len(starts) - 1
    n_words = (d + 63) // 64 + 3  # a block layout's payload holds padding words past d
    rows = np.zeros((5, 8 * n_words + 4 * n_segments), np.uint8)
    rows[:, : 8 * n_words] = gen.integers(0, 256, (5, 8 * n_words))
    scales = gen.uniform(0.01, 100, (5, n_segments)).astype(np.float32)
    scales[:, 0] = 0  # every row's first tensor decodes to -0.0 where its bit is clear
    rows[:, 8 * n_words :] = scales.view(np.uint8)
    weights = np.array([0.3, 0.2, 0.2, 0.2, 0.1], np.float32)
    sums = []
    for k in (native, reference):
        out = np.full(d + 5, 7.0, np.float32)
        k.segment_sign_aggregate(rows, 8 * n_words, weights, starts, out, threads)
        sums.append(out)
    on_torch = torch.full((d + 5,), 7.0)
    torch_codec.segment_sign_aggregate(torch.from_numpy(rows), 8 * n_words, weights, starts, on_torch)
    sums.append(on_torch.numpy())
    for other in sums[1:]:
        assert np.array_equal(sums[0].view(np.uint32), other.view(np.uint32))
    signs = np.unpackbits(rows[:, : 8 * n_words], axis=1, bitorder="little")[:, :d] * 2.0 - 1
    expected = np.einsum("i,ij->j", weights.astype(np.float64), np.repeat(scales, np.diff(starts), axis=1) * signs)
    np.testing.assert_allclose(sums[0][:d], expected, rtol=1e-5, atol=1e-5)
    assert (sums[0][d:] == 7).all()


def test_segment_sign_aggregate_refuses_short_rows():
    starts = np.array([0, 100, 200], np.int64)
    with pytest.raises(ValueError, match="too short"):
        native.segment_sign_aggregate(np.zeros((2, 8 * 4 + 4), np.uint8), 32, np.ones(2, np.float32), starts,
                                      np.zeros(200, np.float32))


def mse_outputs(lay):
    return np.zeros(lay.n_blocks), np.zeros(lay.n_blocks, np.int64), np.zeros(lay.n_blocks)


def server_sum_like(gen, size, n=8):
    """What the FO-SGD server re-quantizes: n workers' +-lambda_i, averaged (a few dozen levels)."""
    lam = 1 + 0.05 * gen.standard_normal(n)
    return np.mean(lam[:, None] * np.where(gen.random((n, size)) < 0.5, -1.0, 1.0), axis=0)


def sparse(gen, size):
    v = np.zeros(size)
    v[gen.choice(size, 9, replace=False)] = gen.standard_normal(9)
    return v


MSE_BLOCKS = {"gaussian": lambda g, s: g.standard_normal(s), "heavy-tailed": lambda g, s: g.standard_t(2, s),
              "server-sum": server_sum_like, "sparse": sparse,
              "integer-levels": lambda g, s: np.round(3 * g.standard_normal(s)),
              "constant": lambda g, s: np.full(s, -0.37), "zeros": lambda g, s: np.zeros(s),
              "tiny": lambda g, s: 1e-30 * g.standard_normal(s)}


@pytest.mark.parametrize("kind", MSE_BLOCKS)
@pytest.mark.parametrize("max_block", [1 << 10, 1 << 14, 1 << 16])
def test_mse_scales_match_the_sorting_reference(isa, kind, max_block, gen):
    """The native root search (inside a bracket from a sample above 4096 coordinates) finds the
    reference's lam* to the last bits of a float64 sum, the same unclipped count, and the block
    norms; blocks of 2^14 and 2^16 take the bracket, a sparse block misses it and falls back to all
    coordinates."""
    lay = BlockLayout(70_001, max_block, 256).flat()
    v = MSE_BLOCKS[kind](gen, lay.padded).astype(np.float32)
    (lam_n, count_n, norm_n), (lam_r, count_r, norm_r) = mse_outputs(lay), mse_outputs(lay)
    native.mse_scales(v, lay, lam_n, count_n, norm_n)
    reference.mse_scales(v, lay, lam_r, count_r, norm_r)
    np.testing.assert_allclose(lam_n, lam_r, rtol=1e-12, atol=0)
    np.testing.assert_allclose(norm_n, norm_r, rtol=1e-12, atol=0)
    assert np.array_equal(count_n, count_r)
    threaded = mse_outputs(lay)
    native.mse_scales(v, lay, *threaded, n_threads=2)
    assert all(np.array_equal(a, b) for a, b in zip(threaded, (lam_n, count_n, norm_n)))


def test_openmp_threads_give_the_same_bits(gen):
    lay = layout_for(1_000_003)
    x = gen.standard_normal(lay.d).astype(np.float32)
    factors = np.ones(lay.n_blocks)
    res = []
    for threads in (1, 2):
        bits, scales = np.zeros(lay.n_words, np.uint64), np.zeros(lay.n_blocks, np.float32)
        native.encode_1bit(x, lay, True, native.LAMBDA_NORM, factors, 1, 2, 3, bits, scales, n_threads=threads)
        mse_bits, mse_scales = np.zeros(lay.n_words, np.uint64), np.zeros(lay.n_blocks, np.float32)
        native.encode_1bit(x, lay, True, native.LAMBDA_MSE_DEBIAS, factors, 1, 2, 3, mse_bits, mse_scales,
                           n_threads=threads)
        codes = np.zeros(lay.padded * 5 // 64, np.uint64)
        native.qsgd_encode(x, lay, 15, 1, 2, 3, codes, scales, n_threads=threads)
        res.append((bits, mse_bits, mse_scales, codes))
    for a, b in zip(*res):
        assert np.array_equal(a, b)


def test_forcing_an_unknown_isa_is_an_error():
    with pytest.raises(ValueError, match="unknown instruction set"):
        native.set_isa("sse9")


@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("k", [2, 3, 7])
def test_server_shards_reproduce_the_whole_server(backend, k, gen):
    """Blocks dealt round-robin to k servers, each aggregating and re-quantizing its shard (a
    layout subset), give exactly the bits and scales of one server doing every block."""
    from fobsgd_mpi import compressors

    d, n = 70_001, 3
    c = compressors.get("fo1bit", block_size=1 << 12, backend=backend)
    lay = c.layout(d)
    rows = np.stack([c.encode(gen.standard_normal(d).astype(np.float32), 5, r + 1).buffer for r in range(n)])
    weights = np.full(n, 1 / n)
    whole = c.encode_flat(c.aggregate(rows, weights, d), 5, 99, d)
    spec = c.spec(d)
    for s in range(k):
        blocks = np.arange(s, lay.n_blocks, k)
        shard = lay.subset(blocks)
        assert shard.block_ids.tolist() == blocks.tolist() and shard.padded == int(lay.sizes[blocks].sum())
        words = np.concatenate([np.arange(lay.offsets[b] // 64, (lay.offsets[b] + lay.sizes[b]) // 64) for b in blocks])
        shard_rows = np.stack([np.concatenate([spec.view(r).bits[words].view(np.uint8),
                                               spec.view(r).scales[blocks].view(np.uint8)]) for r in rows])
        out = c.encode_flat(c.aggregate(shard_rows, weights, shard), 5, 99, shard)
        assert np.array_equal(out.bits, whole.bits[words]) and np.array_equal(out.scales, whole.scales[blocks])
