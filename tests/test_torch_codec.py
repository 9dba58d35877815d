"""The torch codec (fobsgd_mpi.torch_codec) against the numpy reference and the native kernels, on
CPU tensors, and on a GPU (both the CUDA kernels and torch's own operations) where there is one:
identical bits and scales, decoded floats identical where the arithmetic is (see the module's
docstring for where and why it is not)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fobsgd_mpi import compressors, native, reference, rng  # noqa: E402
from fobsgd_mpi import torch_codec as tc  # noqa: E402
from fobsgd_mpi.errors import NonFiniteError  # noqa: E402
from fobsgd_mpi.layout import BlockLayout  # noqa: E402

from .test_kernels_equal import payload_rows  # noqa: E402

SIZES = [1, 63, 64, 300, 4096, 70_001, 200_003]  # all but 4096 pad their last block
TIES = [tc.TIES_RANDOM, tc.TIES_POSITIVE]
KERNEL_RULES = [tc.LAMBDA_NORM, tc.LAMBDA_MAX, tc.LAMBDA_MIN]  # the CUDA kernels' rules
RULES = KERNEL_RULES + [tc.LAMBDA_MSE, tc.LAMBDA_MSE_DEBIAS, tc.LAMBDA_DRIVE]  # these run on the torch path everywhere


def layout_for(d):
    """Blocks up to 2^16 for the largest d (full 2^16 blocks, then a tail from 2^15 down)."""
    return BlockLayout(d, max_block=1 << 16 if d > 100_000 else 1 << 10, min_block=64 if d < 5000 else 256)


def shard_layout():
    """One server's shard: every third block of 70,001 coordinates, ending with the padded last
    block, in runs of two sizes (1024, then 256), each block keeping its global id."""
    lay = layout_for(70_001)
    return lay.subset(np.arange(lay.n_blocks - 1, -1, -3)[::-1])


LAYOUTS = {**{str(d): layout_for(d) for d in SIZES}, "shard": shard_layout()}


def with_zeros(x):
    """x with exact +0 and -0 sprinkled in (every 7th and every 11th from 1)."""
    x[::7] = 0.0
    x[1::11] = -0.0
    return x


def words(t):
    """A torch word tensor as the numpy uint64 words the reference writes."""
    return t.numpy().view(np.uint64)


@pytest.mark.parametrize("seed, step, rank", [(0, 0, 0), (7, 3, 2), (2**64 - 1, 2**40 + 5, rng.SHARED_RANK)])
def test_streams_equal_rng(seed, step, rank):
    blocks = [0, 1, 5, 2**40]
    ids = torch.tensor(blocks)
    for m in (1, 63, 64, 1000):
        flips = tc.rademacher_flips(seed, step, ids, m).numpy()
        unif = tc.centred_uniforms(seed, step, ids, rank, m).numpy()
        zero, tie = (tc.shared_bits(seed, step, ids, m, p).numpy()
                     for p in (rng.PURPOSE_ZERO_SIGN, rng.PURPOSE_VOTE_TIE))
        for i, b in enumerate(blocks):
            assert np.array_equal(flips[i], rng.rademacher_flips(seed, step, b, m))
            assert np.array_equal(unif[i], rng.centred_uniforms(seed, step, b, rank, m))
            assert np.array_equal(zero[i], rng.shared_bits(seed, step, b, m, rng.PURPOSE_ZERO_SIGN))
            assert np.array_equal(tie[i], rng.shared_bits(seed, step, b, m, rng.PURPOSE_VOTE_TIE))
    keys = tc.stream_keys(seed, step, ids, rank, 9)
    expected = [rng.stream_words(rng.stream_key(seed, step, b, rank, 9), 33) for b in blocks]
    assert np.array_equal(words(tc.stream_words(keys, 33)), np.stack(expected))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fwht_equals_reference_every_size(dtype):
    """Every power of two from 2^0 to 2^16, three rows batched: the same stages, so the same bits."""
    gen = torch.Generator().manual_seed(0)
    for log_n in range(17):
        x = torch.randn(3, 1 << log_n, generator=gen, dtype=dtype)
        expected = x.numpy().copy()
        reference.fwht_(expected)
        assert np.array_equal(tc.fwht_(x).numpy(), expected), f"{dtype} 2^{log_n}"


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(6), "power-of-two"), (torch.zeros(0), "power-of-two"), (torch.zeros(8, dtype=torch.int32), "float32"),
    (torch.zeros(8, 8)[:, ::2], "contiguous"), (np.zeros(8, np.float32), "tensor"),
])
def test_fwht_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        tc.fwht_(bad)


def encode(k, x, lay, rotate, rule, seed=7, step=3, rank=2):
    factors = np.sqrt(2 * np.log(2 * lay.sizes / 1e-2) / lay.sizes)
    if k is tc:
        bits, scales = torch.zeros(lay.n_words, dtype=torch.int64), torch.zeros(lay.n_blocks)
        tc.encode_1bit(torch.from_numpy(x), lay, rotate, rule, factors, seed, step, rank, bits, scales)
        return words(bits), scales.numpy()
    bits, scales = np.zeros(lay.n_words, np.uint64), np.zeros(lay.n_blocks, np.float32)
    k.encode_1bit(x, lay, rotate, rule, factors, seed, step, rank, bits, scales)
    return bits, scales


# Every size both ways; the lambda rule cycles so each rule meets padded layouts, rotated or not.
@pytest.mark.parametrize("d, rotate, rule", [(d, rotate, RULES[(i + rotate) % len(RULES)])
                                             for i, d in enumerate(SIZES) for rotate in (True, False)])
def test_encode_identical_bits_and_scales(d, rotate, rule, gen):
    x = gen.standard_normal(d).astype(np.float32)
    lay = layout_for(d)
    (bt, st), (br, sr) = encode(tc, x, lay, rotate, rule), encode(reference, x, lay, rotate, rule)
    assert np.array_equal(st, sr)
    assert np.array_equal(bt, br)


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("rotate", [True, False])
def test_decode_equals_native_bits_and_reference_closely(isa, d, rotate, gen):
    lay = layout_for(d)
    bits = gen.integers(0, 2**63, lay.n_words, dtype=np.uint64) * 2 + gen.integers(0, 2, lay.n_words, dtype=np.uint64)
    scales = gen.random(lay.n_blocks, dtype=np.float32) + 0.1
    outs = {}
    for k in (native, reference):
        outs[k] = np.full(d, 0.5, dtype=np.float32)
        k.decode_1bit(bits, scales, lay, rotate, 7, 3, outs[k], weight=0.25, accumulate=True)
    out = torch.full((d,), 0.5)
    tc.decode_1bit(torch.from_numpy(bits.view(np.int64)), torch.from_numpy(scales), lay, rotate, 7, 3, out,
                   weight=0.25, accumulate=True)
    assert np.array_equal(out.numpy(), outs[native])
    # The reference rounds at every transform stage, native and torch only once (decode_1bit's docstring).
    np.testing.assert_allclose(out.numpy(), outs[reference], rtol=1e-5, atol=1e-6)
    fresh = torch.zeros(d)
    tc.decode_1bit(torch.from_numpy(bits), torch.from_numpy(scales), lay, rotate, 7, 3, fresh, weight=0.25)
    np.testing.assert_allclose(fresh.numpy() + 0.5, out.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3, 8])
@pytest.mark.parametrize("shard", [False, True])
def test_aggregate_identical(n, shard, gen):
    lay = layout_for(70_001)
    if shard:
        lay = lay.subset(np.arange(1, lay.n_blocks, 3))
    rows, weights = payload_rows(lay, n, gen), gen.random(n, dtype=np.float32)
    expected = np.empty(lay.padded, np.float32)
    reference.aggregate_1bit(rows, lay.n_words * 8, weights, lay, expected)
    out = torch.empty(lay.padded)
    tc.aggregate_1bit(torch.from_numpy(rows), lay.n_words * 8, torch.from_numpy(weights), lay, out)
    assert np.array_equal(out.numpy(), expected)


def test_server_aggregate_and_requantize_identical(gen):
    """Workers' numpy payloads, summed and re-quantized by a torch server (encode_flat), give the
    numpy server's bits and scales."""
    d, n, step = 70_001, 3, 5
    c = compressors.get("fo1bit", block_size=1 << 12, backend="numpy")
    lay = c.layout(d)
    rows = np.stack([c.encode(gen.standard_normal(d).astype(np.float32), step, r + 1).buffer for r in range(n)])
    weights = np.full(n, 1 / n, np.float32)
    expected = c.encode_flat(c.aggregate(rows, weights, d), step, 99, d)
    v = torch.empty(lay.padded)
    tc.aggregate_1bit(torch.from_numpy(rows), c.spec(d).offsets["scales"], weights, lay, v)
    bits, scales = torch.zeros(lay.n_words, dtype=torch.int64), torch.zeros(lay.n_blocks)
    tc.encode_1bit(v, lay.flat(), False, tc.LAMBDA_NORM, c.lambda_factors(lay), c.seed, step, 99, bits, scales)
    assert np.array_equal(words(bits), expected.bits) and np.array_equal(scales.numpy(), expected.scales)


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("ties", TIES, ids=["random", "positive"])
def test_scaled_and_plain_sign_identical(name, ties, gen):
    """Scaled sign (n_words words and a scale per block) and plain sign (scales None, ceil(d / 64)
    words, the padded last block cut short): bits, zeros' bits, bits past d (0), scales and
    decoded values as the reference's."""
    lay = LAYOUTS[name]
    d = lay.d
    x = with_zeros(gen.standard_normal(d).astype(np.float32))
    tx = torch.from_numpy(x)
    bits, scales = np.zeros(lay.n_words, np.uint64), np.zeros(lay.n_blocks, np.float32)
    reference.scaled_sign_encode(x, lay, ties, 9, 4, bits, scales)
    tbits, tscales = torch.full((lay.n_words,), 7, dtype=torch.int64), torch.zeros(lay.n_blocks)
    tc.scaled_sign_encode(tx, lay, ties, 9, 4, tbits, tscales)
    assert np.array_equal(words(tbits), bits) and np.array_equal(tscales.numpy(), scales)
    plain, tplain = np.zeros((d + 63) // 64, np.uint64), torch.full(((d + 63) // 64,), 7, dtype=torch.uint64)
    reference.scaled_sign_encode(x, lay, ties, 9, 4, plain, None)
    tc.scaled_sign_encode(tx, lay, ties, 9, 4, tplain, None)  # uint64 word tensors work as int64 ones do
    assert np.array_equal(words(tplain), plain)
    for b, s, tb, ts in ((bits, scales, tbits, tscales), (bits, None, tbits, None), (plain, None, tplain, None)):
        out = np.ones(d, np.float32)
        reference.scaled_sign_decode(b, s, lay, out, weight=2.0, accumulate=True)
        tout = torch.ones(d)
        tc.scaled_sign_decode(tb, ts, lay, tout, weight=2.0, accumulate=True)
        assert np.array_equal(tout.numpy(), out)


@pytest.mark.parametrize("ties", TIES, ids=["random", "positive"])
def test_zeros_take_the_rule_and_the_shared_stream(ties):
    """All +0 and -0: each block's valid coordinates get that block's shared stream bits under its
    global id (purpose 4), or all + with TIES_POSITIVE; padding and bits past d stay 0."""
    lay = shard_layout()
    x = torch.zeros(lay.d)
    x[1::2] = -0.0
    bits = torch.zeros(lay.n_words, dtype=torch.int64)
    tc.scaled_sign_encode(x, lay, ties, 9, 4, bits, None)
    got = np.unpackbits(words(bits).view(np.uint8), bitorder="little").astype(bool)
    for b, off, m, valid in lay.blocks():
        want = rng.shared_bits(9, 4, int(lay.block_ids[b]), valid, rng.PURPOSE_ZERO_SIGN)
        assert np.array_equal(got[off : off + valid], want if ties == tc.TIES_RANDOM else np.ones(valid, bool))
    assert not got[lay.d :].any() and lay.padded > lay.d


# The whole vector's plain sign payload (ceil(d / 64) words), a padded layout's n_words words, and
# one server's shard of the whole payload (ties drawn under global block ids).
VOTE_LAYOUTS = {"whole": (LAYOUTS["70001"], (70_001 + 63) // 64), "padded": (LAYOUTS["300"], LAYOUTS["300"].n_words),
                "shard": (LAYOUTS["shard"], (LAYOUTS["shard"].d + 63) // 64)}


@pytest.mark.parametrize("n", [1, 2, 3, 8, 33])
@pytest.mark.parametrize("name", VOTE_LAYOUTS)
@pytest.mark.parametrize("ties", TIES, ids=["random", "positive"])
def test_majority_vote_identical(n, name, ties, gen):
    """Random votes with a tie (n even) at every third position."""
    lay, n_words = VOTE_LAYOUTS[name]
    flags = gen.integers(0, 2, (n, n_words * 64), dtype=np.uint8)
    flags[:, ::3] = np.arange(n)[:, None] % 2
    w = np.packbits(flags, axis=1, bitorder="little").view(np.uint64)
    out = np.zeros(n_words, np.uint64)
    reference.majority_vote(w, lay, ties, 9, 4, out)
    tout = torch.zeros(n_words, dtype=torch.int64)
    tc.majority_vote(torch.from_numpy(w), lay, ties, 9, 4, tout)
    assert np.array_equal(words(tout), out)


def test_majority_tie_votes_by_the_rule():
    lay = BlockLayout(64, 64, 64)
    w = torch.tensor([[0b01], [0b10]], dtype=torch.int64)
    out = torch.zeros(1, dtype=torch.int64)
    tc.majority_vote(w, lay, tc.TIES_POSITIVE, 0, 0, out)
    assert out.item() == 0b11  # GRACE: sum >= 0
    tc.majority_vote(w, lay, tc.TIES_RANDOM, 5, 6, out)
    tie = rng.shared_bits(5, 6, 0, 64, rng.PURPOSE_VOTE_TIE)
    assert out.item() == int(tie[0]) | int(tie[1]) << 1


@pytest.mark.parametrize("d, levels", [(1, 1), (300, 15), (300, 255), (70_001, 1), (70_001, 255)])
def test_qsgd_identical(d, levels, gen):
    c = compressors.get("qsgd", levels=levels, seed=3, backend="numpy")
    x = gen.standard_normal(d).astype(np.float32)
    x[::11] = 0.0
    p = c.encode(x, step=4, rank=2)
    lay = c.layout(d)
    codes, norms = torch.zeros(len(p.codes), dtype=torch.int64), torch.zeros(lay.n_blocks)
    tc.qsgd_encode(torch.from_numpy(x), lay, levels, c.seed, 4, 2, codes, norms)
    assert np.array_equal(words(codes), p.codes) and np.array_equal(norms.numpy(), p.norms)
    out = torch.ones(d)
    tc.qsgd_decode(codes, norms, lay, levels, out, weight=0.5, accumulate=True)
    assert np.array_equal(out.numpy(), c.decode(p, 4, d, out=np.ones(d, np.float32), weight=0.5, accumulate=True))


@pytest.mark.parametrize("d, ratio", [(1, 0.5), (1000, 0.01), (70_001, 0.1)])
def test_topk_identical(d, ratio, gen):
    c = compressors.get("topk", ratio=ratio, backend="numpy")
    x = gen.standard_normal(d).astype(np.float32)
    p = c.encode(x, 0, 0)
    k = c.k(d)
    idx, vals = torch.zeros(k, dtype=torch.int64), torch.zeros(k)
    tc.topk_encode(torch.from_numpy(x), k, idx, vals)
    assert np.array_equal(idx.numpy(), p.indices) and np.array_equal(vals.numpy(), p.values)
    out = torch.ones(d)
    tc.topk_decode(idx, vals, d, out, weight=0.5, accumulate=True)
    assert np.array_equal(out.numpy(), c.decode(p, 0, d, out=np.ones(d, np.float32), weight=0.5, accumulate=True))


def test_non_finite_input_refused():
    lay = BlockLayout(1000, 256, 64)
    x = torch.ones(1000)
    x[517] = float("nan")
    bits, scales = torch.zeros(lay.n_words, dtype=torch.int64), torch.zeros(lay.n_blocks)
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        tc.encode_1bit(x, lay, True, tc.LAMBDA_NORM, np.ones(lay.n_blocks), 0, 0, 0, bits, scales)
    with pytest.raises(NonFiniteError):
        tc.scaled_sign_encode(x, lay, tc.TIES_RANDOM, 0, 0, bits, scales)


def test_backend_for_chooses_by_array_type():
    assert native.backend_for(torch.zeros(1)) == "torch"
    assert native.backend_for(np.zeros(1)) == "native"
    assert native.backend("torch") is tc and native.backend("cuda") is tc
    with pytest.raises(ValueError, match="unknown kernel backend"):
        native.backend("opencl")


# ---------------------------------------------------------------- on a GPU
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@pytest.fixture(params=["cuda", "torch"])
def gpu_kernels(request):
    """The GPU path under test: the CUDA kernels, or the torch codec's own operations on the GPU."""
    if request.param == "cuda" and native.cuda_extension() is None:
        pytest.skip("fobsgd_mpi._native_cuda is not built (nvcc or a CUDA torch missing at install)")
    native.set_cuda_kernels(request.param == "cuda")
    yield request.param
    native.set_cuda_kernels(True)


def cuda(a):
    return torch.from_numpy(a).cuda()


@needs_gpu
def test_gpu_backend_for(gpu_kernels):
    assert native.backend_for(torch.zeros(1, device="cuda")) == gpu_kernels


@needs_gpu
def test_gpu_fwht_every_size(gpu_kernels, gen):
    """Every power of two from 2^0 to 2^20 (past the kernels' 2^12 in shared memory), three rows."""
    for log_n in range(21):
        x = gen.standard_normal((3, 1 << log_n)).astype(np.float32)
        got = tc.fwht_(cuda(x)).cpu().numpy()
        assert np.array_equal(got, reference.fwht_(x)), f"2^{log_n}"


@needs_gpu
@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("rotate", [True, False])
def test_gpu_encode_identical(gpu_kernels, name, rotate, gen):
    lay = LAYOUTS[name]
    x = gen.standard_normal(lay.d).astype(np.float32)
    factors = np.sqrt(2 * np.log(2 * lay.sizes / 1e-2) / lay.sizes)
    for rule in KERNEL_RULES:
        bits, scales = np.zeros(lay.n_words, np.uint64), np.zeros(lay.n_blocks, np.float32)
        reference.encode_1bit(x, lay, rotate, rule, factors, 7, 3, 2, bits, scales)
        tbits = torch.zeros(lay.n_words, dtype=torch.int64, device="cuda")
        tscales = torch.zeros(lay.n_blocks, device="cuda")
        tc.encode_1bit(cuda(x), lay, rotate, rule, factors, 7, 3, 2, tbits, tscales)
        assert np.array_equal(tscales.cpu().numpy(), scales), rule
        assert np.array_equal(words(tbits.cpu()), bits), rule


@needs_gpu
@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("rotate", [True, False])
def test_gpu_decode_equals_native(gpu_kernels, name, rotate, gen):
    lay = LAYOUTS[name]
    bits = gen.integers(0, 2**63, lay.n_words, dtype=np.uint64) * 2 + gen.integers(0, 2, lay.n_words, dtype=np.uint64)
    scales = gen.random(lay.n_blocks, dtype=np.float32) + 0.1
    expected = np.full(lay.d, 0.5, dtype=np.float32)
    native.decode_1bit(bits, scales, lay, rotate, 7, 3, expected, weight=0.25, accumulate=True)
    out = torch.full((lay.d,), 0.5, device="cuda")
    tc.decode_1bit(cuda(bits.view(np.int64)), cuda(scales), lay, rotate, 7, 3, out, weight=0.25, accumulate=True)
    assert np.array_equal(out.cpu().numpy(), expected)


@needs_gpu
@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("shard", [False, True])
def test_gpu_aggregate_identical(gpu_kernels, n, shard, gen):
    lay = LAYOUTS["shard" if shard else "70001"]
    rows, weights = payload_rows(lay, n, gen), gen.random(n, dtype=np.float32)
    expected = np.empty(lay.padded, np.float32)
    reference.aggregate_1bit(rows, lay.n_words * 8, weights, lay, expected)
    out = torch.empty(lay.padded, device="cuda")
    tc.aggregate_1bit(cuda(rows), lay.n_words * 8, weights, lay, out)
    assert np.array_equal(out.cpu().numpy(), expected)


@needs_gpu
def test_gpu_non_finite_refused(gpu_kernels):
    lay = BlockLayout(1000, 256, 64)
    x = torch.ones(1000, device="cuda")
    x[517] = float("inf")
    bits = torch.zeros(lay.n_words, dtype=torch.int64, device="cuda")
    scales = torch.zeros(lay.n_blocks, device="cuda")
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        tc.encode_1bit(x, lay, True, tc.LAMBDA_NORM, np.ones(lay.n_blocks), 0, 0, 0, bits, scales)
