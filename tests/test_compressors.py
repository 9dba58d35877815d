import math

import numpy as np
import pytest

from fobsgd_mpi import arrays, compressors
from fobsgd_mpi.errors import NonFiniteError
from fobsgd_mpi.layout import BlockLayout

ALL = compressors.names()


def rel_mse(c, x, trials, d=None):
    d = d or len(x)
    err = [np.sum((c.decode(c.encode(x, s, 1), s, d) - x) ** 2) for s in range(trials)]
    return np.mean(err) / np.sum(x.astype(np.float64) ** 2)


def test_registry_lists_the_documented_names():
    assert set(ALL) == {"fo1bit", "dithered-sign", "scaled-sign", "sign", "qsgd", "topk", "identity"}
    with pytest.raises(ValueError, match="unknown compressor 'nope'"):
        compressors.get("nope")
    with pytest.raises(ValueError, match="bad options"):
        compressors.get("fo1bit", not_an_option=1)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("d", [1, 100, 65_537, 1_000_003])
def test_payload_size_is_what_payload_nbytes_says(name, d, gen):
    c = compressors.get(name)
    p = c.encode(gen.standard_normal(d).astype(np.float32), 0, 1)
    assert p.nbytes == p.buffer.nbytes == c.payload_nbytes(d)
    assert c.decode(p, 0, d).shape == (d,)


def test_fo1bit_spends_at_most_1_01_bits_per_coordinate():
    c = compressors.get("fo1bit")
    d = 1_000_003
    bits = 8 * c.payload_nbytes(d) / d
    assert bits <= 1.01
    lay = c.layout(d)
    assert lay.padded - d < lay.min_block  # padding below the smallest block
    assert 8 * c.payload_nbytes(d) == lay.padded + 32 * lay.n_blocks


def test_layout_binary_expansion_of_the_tail():
    lay = BlockLayout(1_000_003)
    assert lay.sizes.tolist() == [65536] * 15 + [16384, 512, 256]
    assert lay.padded == 1_000_192
    with pytest.raises(ValueError, match="power of two"):
        BlockLayout(100, max_block=1000)


@pytest.mark.parametrize("d", [300, 65_537, 70_001, 1_000_003])
@pytest.mark.parametrize("k", [2, 3, 7])
def test_a_shard_has_the_layout_of_its_own_length(d, k):
    """A server's shard (every k-th block) is laid out as BlockLayout would lay out a vector of
    its length, padding only at the end, so a compressor can encode a shard by its length."""
    lay = BlockLayout(d, max_block=1 << 12, min_block=256)
    for s in range(min(k, lay.n_blocks)):
        shard = lay.subset(np.arange(s, lay.n_blocks, k))
        alone = BlockLayout(shard.d, max_block=1 << 12, min_block=256)
        assert shard.sizes.tolist() == alone.sizes.tolist() and shard.valid.tolist() == alone.valid.tolist()
    assert sum(lay.subset(np.arange(s, lay.n_blocks, k)).d for s in range(min(k, lay.n_blocks))) == d


@pytest.mark.parametrize("name", ["scaled-sign", "sign", "identity"])
@pytest.mark.parametrize("d", [300, 70_001])
def test_block_ranges_cut_the_payload_of_a_shard(name, d, gen):
    """The bytes a sharded server sends server s out of a whole payload (block_ranges) are the
    payload of s's coordinates encoded on their own."""
    c = compressors.get(name, block_size=1 << 12, **({"sign_scale": "block"} if name == "scaled-sign" else {}))
    x = gen.standard_normal(d).astype(np.float32)
    x[::5] = 0  # exact zeros draw their sign from their block's stream
    whole, lay = c.encode(x, 0, 1), c.layout(d)
    for s in range(min(3, lay.n_blocks)):
        blocks = np.arange(s, lay.n_blocks, 3)
        mine = np.concatenate([x[off : off + v] for off, v in zip(lay.offsets[blocks], lay.valid[blocks])])
        cut = np.concatenate([whole.buffer[off : off + n] for off, n in c.block_ranges(lay, blocks)])
        alone = c.encode(mine, 0, 1, layout=lay.subset(blocks))
        assert c.spec_of(lay.subset(blocks)) == alone.spec and np.array_equal(cut, alone.buffer)


@pytest.mark.parametrize("name", ["fo1bit", "dithered-sign", "scaled-sign", "sign", "qsgd"])
def test_native_and_numpy_backends_agree(name, gen):
    x = gen.standard_normal(70_001).astype(np.float32)
    x[::9] = 0
    n, r = compressors.get(name, backend="native"), compressors.get(name, backend="numpy")
    pn, pr = n.encode(x, 5, 2), r.encode(x, 5, 2)
    assert np.array_equal(pn.buffer, pr.buffer)
    np.testing.assert_allclose(n.decode(pn, 5, len(x)), r.decode(pr, 5, len(x)), rtol=1e-5, atol=1e-5)


def assert_unbiased(c, x, trials=400):
    """The mean of T independent draws is off by about sqrt(var / T) in norm; allow 1.5x that."""
    d = len(x)
    mean = np.mean([c.decode(c.encode(x, s, 1), s, d) for s in range(trials)], axis=0)
    var = rel_mse(c, x, 100) * np.sum(x.astype(np.float64) ** 2)
    assert np.linalg.norm(mean - x) < 1.5 * math.sqrt(var / trials)


def test_fo1bit_max_rule_is_unbiased(gen):
    assert_unbiased(compressors.get("fo1bit", lambda_rule="max", block_size=1024),
                    gen.standard_normal(1024).astype(np.float32))


def test_fo1bit_variance_matches_spec(gen):
    m, eta = 1 << 14, 1e-2
    x = gen.standard_normal(m).astype(np.float32)
    c = compressors.get("fo1bit", block_size=m, eta=eta)
    expected = 2 * math.log(2 * m / eta) - 1
    assert rel_mse(c, x, 60) == pytest.approx(expected, rel=0.05)


def test_min_rule_has_the_least_variance(gen):
    m = 1 << 12
    x = gen.standard_normal(m).astype(np.float32)
    mse = {rule: rel_mse(compressors.get("fo1bit", block_size=m, lambda_rule=rule), x, 40)
           for rule in ("norm", "max", "min")}
    assert mse["min"] <= min(mse["norm"], mse["max"]) * 1.02, mse


def test_flattening_beats_dithered_sign_50x_on_a_sparse_vector():
    m = 1 << 14
    x = np.zeros(m, dtype=np.float32)
    x[1234] = 3.0
    flat = rel_mse(compressors.get("fo1bit", block_size=m), x, 40)
    plain = rel_mse(compressors.get("dithered-sign", block_size=m), x, 40)
    assert flat < 2 * math.log(2 * m / 1e-2)
    assert plain > 50 * flat


def test_qsgd_is_unbiased(gen):
    assert_unbiased(compressors.get("qsgd", levels=3), gen.standard_normal(2048).astype(np.float32))


def test_scaled_sign_and_topk_are_exact_where_they_should_be(gen):
    x = np.array([3.0, -1.0, 2.0, -2.0] * 64, dtype=np.float32)
    for scale in ("vector", "block"):
        s = compressors.get("scaled-sign", sign_scale=scale)
        np.testing.assert_allclose(s.decode(s.encode(x, 0, 0), 0, len(x)), 2.0 * np.sign(x))
    t = compressors.get("topk", ratio=0.25)
    y = gen.standard_normal(400).astype(np.float32)
    yh = t.decode(t.encode(y, 0, 0), 0, 400)
    keep = np.argsort(-np.abs(y))[:100]
    assert np.array_equal(yh[keep], y[keep]) and np.count_nonzero(yh) == 100


def test_server_requantize_round_trip(gen):
    """Workers' payloads aggregated in the flattened domain, re-quantized, decode near the mean."""
    d, n = 50_000, 4
    c = compressors.get("fo1bit", lambda_rule="max")
    xs = [gen.standard_normal(d).astype(np.float32) for _ in range(n)]
    rows = np.stack([c.encode(x, 9, i + 1).buffer for i, x in enumerate(xs)])
    v = c.aggregate(rows, np.full(n, 1 / n), d)
    direct = np.mean([c.decode(c.spec(d).view(r), 9, d) for r in rows], axis=0)
    np.testing.assert_allclose(c.unflatten(v, 9, d), direct, rtol=1e-4, atol=1e-4)
    down = c.encode_flat(v, 9, 0, d)
    assert down.nbytes == c.payload_nbytes(d)
    assert np.isfinite(c.decode(down, 9, d)).all()


@pytest.mark.parametrize("name", ALL)
def test_bad_gradients_are_clear_errors(name):
    c = compressors.get(name)
    with pytest.raises(ValueError, match="float32"):
        c.encode(np.ones(10, dtype=np.float64), 0, 0)
    with pytest.raises(ValueError, match="contiguous"):
        c.encode(np.ones(20, dtype=np.float32)[::2], 0, 0)
    with pytest.raises(ValueError, match="1-D"):
        c.encode(np.ones((2, 5), dtype=np.float32), 0, 0)


@pytest.mark.parametrize("name", ["fo1bit", "dithered-sign", "scaled-sign", "sign", "qsgd"])
def test_nan_gradient_refused(name):
    x = np.ones(300, dtype=np.float32)
    x[3] = np.nan
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        compressors.get(name).encode(x, 0, 0)


def test_bad_options():
    with pytest.raises(ValueError, match="eta"):
        compressors.get("fo1bit", eta=2.0)
    with pytest.raises(ValueError, match="lambda_rule"):
        compressors.get("fo1bit", lambda_rule="median")
    with pytest.raises(ValueError, match="power of two"):
        compressors.get("fo1bit", block_size=1000)
    with pytest.raises(ValueError, match="ratio"):
        compressors.get("topk", ratio=0)


# ---------------------------------------------------------------- zeros and ties (issue 13.1)
@pytest.mark.parametrize("name", ["sign", "scaled-sign"])
def test_exact_zeros_take_a_shared_random_sign(name, gen):
    """A zero coordinate is no longer always +: about half go each way, the same on every rank
    (the draw depends on seed, step and block only), new at each step; --sign-ties positive
    keeps GRACE's `x >= 0`."""
    d = 4096
    x = np.zeros(d, dtype=np.float32)
    x[::2] = gen.standard_normal(d // 2).astype(np.float32)
    c = compressors.get(name, seed=3, block_size=1024)
    signs = {rank: np.sign(c.decode(c.encode(x, 7, rank), 7, d)) for rank in (1, 2)}
    assert np.array_equal(signs[1], signs[2])
    zero = signs[1][1::2]
    assert abs(np.mean(zero)) < 0.1 and np.array_equal(signs[1][::2], np.sign(x[::2]))
    assert not np.array_equal(zero, np.sign(c.decode(c.encode(x, 8, 1), 8, d))[1::2])
    positive = compressors.get(name, sign_ties="positive")
    assert (np.sign(positive.decode(positive.encode(x, 7, 1), 7, d))[1::2] == 1).all()


def test_a_dead_unit_no_longer_drifts_under_majority_vote():
    """A zero gradient on every worker voted + at every step before (x >= 0), so the weight
    moved by lr each step; now its steps are a seeded +-1 walk."""
    d, n, steps = 512, 4, 200
    def walk(c):
        rows = lambda step: np.stack([c.encode(np.zeros(d, np.float32), step, r).buffer for r in range(n)])
        return sum(c.decode(c.majority_vote(rows(t), t, d), t, d) for t in range(steps))

    assert np.abs(walk(compressors.get("sign", block_size=256))).max() < 4 * math.sqrt(steps)
    assert (walk(compressors.get("sign", block_size=256, sign_ties="positive")) == steps).all()


def test_a_tied_vote_is_random_not_plus(gen):
    """Two workers voting against each other in every coordinate: the old rule gave + everywhere."""
    d = 2048
    x = gen.standard_normal(d).astype(np.float32)
    c = compressors.get("sign", block_size=1024, seed=5)
    rows = np.stack([c.encode(x, 0, 1).buffer, c.encode(-x, 0, 2).buffer])
    vote = c.decode(c.majority_vote(rows, 0, d), 0, d)
    assert abs(vote.mean()) < 0.1
    odd = np.stack([rows[0], rows[1], rows[0]])  # no tie with three: the majority wins
    assert np.array_equal(c.decode(c.majority_vote(odd, 0, d), 0, d), np.sign(x))


def test_scaled_sign_scale_per_tensor_vector_or_block():
    """Per tensor (the EF-SGD and DoubleSqueeze authors' code, the default) one float per tensor;
    per vector every block carries ||x||_1 / d; per block each its own mean. Only the tensor
    scales make the decoded vector exact when each tensor has one magnitude."""
    x = np.concatenate([np.full(100, 1.0), np.full(412, -3.0)]).astype(np.float32)
    ten = compressors.get("scaled-sign", block_size=256, tensor_sizes=(100, 412))
    vec = compressors.get("scaled-sign", block_size=256, sign_scale="vector")
    blk = compressors.get("scaled-sign", block_size=256, sign_scale="block")
    assert ten.encode(x, 0, 0).scales.tolist() == [1.0, 3.0]
    assert vec.encode(x, 0, 0).scales.tolist() == [2.609375] * 2
    assert blk.encode(x, 0, 0).scales.tolist() == [(100 + 3 * 156) / 256, 3.0]
    np.testing.assert_array_equal(ten.decode(ten.encode(x, 0, 0), 0, 512), x)
    assert ten.payload_nbytes(512) == 512 // 8 + 2 * 4 and vec.payload_nbytes(512) == 512 // 8 + 2 * 4
    assert compressors.get("scaled-sign").payload_nbytes(10_000) == 10_240 // 8 + 4  # no tensors given: one
    with pytest.raises(ValueError, match="add up to 500 coordinates, the vector has 512"):
        compressors.get("scaled-sign", tensor_sizes=(100, 400)).encode(x, 0, 0)
    with pytest.raises(ValueError, match="tensor_sizes"):
        compressors.get("scaled-sign", tensor_sizes=(100, 0))
    with pytest.raises(ValueError, match="sign_scale"):
        compressors.get("scaled-sign", sign_scale="layer")
    with pytest.raises(ValueError, match="sign_ties"):
        compressors.get("sign", sign_ties="zero")


def test_per_tensor_scales_do_not_split_by_blocks():
    c = compressors.get("scaled-sign", block_size=256, tensor_sizes=(300, 212))
    with pytest.raises(ValueError, match="--sign-scale block"):
        c.block_ranges(c.layout(512), [0])


@pytest.mark.parametrize("backend", ["native", "numpy", "torch"])
def test_per_tensor_scaled_sign_on_every_backend(backend, gen):
    """The same payload from numpy, the native kernels and torch; its decode (+ accumulate) and the
    server's weighted sum of rows are sign(x) times each tensor's mean |x|."""
    import torch

    sizes = (3000, 64, 70_001, 7, 1000)
    d = sum(sizes)
    c = compressors.get("scaled-sign", block_size=1 << 12, tensor_sizes=sizes, backend=backend)
    ref = compressors.get("scaled-sign", block_size=1 << 12, tensor_sizes=sizes, backend="numpy")
    xs = [gen.standard_normal(d).astype(np.float32) * gen.uniform(0.1, 10, d).astype(np.float32) for _ in range(3)]
    xs[0][::7] = 0  # exact zeros take the tie rule's sign
    on = (lambda a: torch.from_numpy(a)) if backend == "torch" else (lambda a: a)
    for x in xs:
        assert np.array_equal(arrays.host(c.encode(on(x), 5, 1).buffer), ref.encode(x, 5, 1).buffer)
    starts = np.cumsum((0,) + sizes[:-1])
    means = np.add.reduceat(np.abs(xs[1]).astype(np.float64), starts) / sizes
    payload = c.encode(on(xs[1]), 5, 1)
    np.testing.assert_allclose(arrays.host(payload.scales), means, rtol=1e-6)
    signs = np.where(xs[1] > 0, 1.0, -1.0)
    out = on(np.full(d, 0.5, np.float32))
    c.decode(payload, 5, d, out=out, weight=0.25, accumulate=True)
    np.testing.assert_allclose(arrays.host(out), 0.5 + 0.25 * signs * np.repeat(means, sizes), rtol=1e-5)
    if backend != "torch":  # the server sums host rows with the native or numpy kernels
        rows = np.stack([ref.encode(x, 5, i + 1).buffer for i, x in enumerate(xs)])
        weights = np.array([0.5, 0.25, 0.25], np.float32)
        total = c.aggregate(rows, weights, d)
        parts = sum(w * ref.decode(ref.spec(d).view(r), 5, d) for w, r in zip(weights, rows))
        np.testing.assert_allclose(total[:d], parts, rtol=1e-5, atol=1e-6)
        assert not total[d:].any()


# ---------------------------------------------------------------- options (issue 13.3)
@pytest.mark.parametrize("d, ratio, k", [(100, 0.07, 7), (1000, 0.001, 1), (300, 0.01, 3), (1_000_003, 0.01, 10_001),
                                         (29, 0.1, 3), (100, 0.29, 29), (7, 1.0, 7), (10, 1e-9, 1)])
def test_topk_keeps_exactly_ceil_d_times_ratio(d, ratio, k):
    """Floats put 100 * 0.07 at 7.000000000000001 (ceil 8) and 100 * 0.29 at 28.999999999999996."""
    assert compressors.get("topk", ratio=ratio).k(d) == k


def _cfg(**values):
    import argparse
    base = dict(block_size=None, eta=1e-2, lambda_rule="min", seed=4, qsgd_levels=7, topk_ratio=0.05)
    return argparse.Namespace(**{**base, **values})


def test_each_compressor_reads_its_own_options_from_the_config():
    assert compressors.from_config("qsgd", _cfg(block_size=512)).block_size == 512
    q = compressors.from_config("qsgd", _cfg())
    assert (q.block_size, q.levels, q.seed) == (1024, 7, 4)  # bucket: its own default when unset
    f = compressors.from_config("fo1bit", _cfg(block_size=4096))
    assert (f.block_size, f.lambda_rule, f.seed) == (4096, "min", 4)
    assert compressors.from_config("dithered-sign", _cfg()).lambda_rule == "max"  # not --lambda-rule
    assert compressors.from_config("topk", _cfg()).ratio == 0.05
    s = compressors.from_config("scaled-sign", _cfg(), sign_scale="block")  # an algorithm's default
    assert (s.sign_scale, s.sign_ties) == ("block", "random")
    assert compressors.from_config("scaled-sign", _cfg(sign_scale="vector"), sign_scale="block").sign_scale == "vector"


def test_block_size_for_topk_is_refused():
    with pytest.raises(ValueError, match="topk works on the whole vector, so --block-size does not apply"):
        compressors.from_config("topk", _cfg(block_size=1024))
