import math

import numpy as np
import pytest

from fobsgd_mpi import compressors
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
    c = compressors.get(name, block_size=1 << 12)
    x = gen.standard_normal(d).astype(np.float32)
    whole, lay = c.encode(x, 0, 1), c.layout(d)
    for s in range(min(3, lay.n_blocks)):
        blocks = np.arange(s, lay.n_blocks, 3)
        mine = np.concatenate([x[off : off + v] for off, v in zip(lay.offsets[blocks], lay.valid[blocks])])
        cut = np.concatenate([whole.buffer[off : off + n] for off, n in c.block_ranges(lay, blocks)])
        alone = c.encode(mine, 0, 1)
        assert c.spec_of(lay.subset(blocks)) == alone.spec and np.array_equal(cut, alone.buffer)


@pytest.mark.parametrize("name", ["fo1bit", "dithered-sign", "scaled-sign", "sign", "qsgd"])
def test_native_and_numpy_backends_agree(name, gen):
    x = gen.standard_normal(70_001).astype(np.float32)
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
    s = compressors.get("scaled-sign")
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


@pytest.mark.parametrize("name", ["fo1bit", "dithered-sign", "scaled-sign", "qsgd"])
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
