"""--server-scale and --worker-scale (issue 13 part 4): the MSE-optimal scale, its shrinkage and
debias gains, on the server's sum and on a worker's flattened block, and that neither changes the
payload or the replicas' bit-identity."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from fobsgd_mpi import compressors, reference
from fobsgd_mpi.algorithms.base import SERVER_STREAM
from fobsgd_mpi.algorithms.fo_sgd import FOSGD
from fobsgd_mpi.algorithms.options import AlgorithmOptions
from fobsgd_mpi.compressors.fo1bit import SERVER_SCALES, WORKER_SCALES


@pytest.fixture
def gen():
    return np.random.default_rng(13)


def blocks(gen):
    m = 256
    sparse = np.zeros(m)
    sparse[gen.choice(m, 5, replace=False)] = gen.standard_normal(5) * 10
    heavy = gen.standard_t(2, m)
    return {"gaussian": gen.standard_normal(m), "sparse": sparse, "one-hot": np.eye(m)[7] * 3.0,
            "heavy-tailed": heavy, "constant": np.full(m, -0.5), "tiny": gen.standard_normal(64) * 1e-20}


@pytest.mark.parametrize("kind", ["gaussian", "sparse", "one-hot", "heavy-tailed", "constant", "tiny"])
def test_mse_lambda_minimizes_the_analytic_error(kind, gen):
    v = blocks(gen)[kind]
    lam, f = reference.mse_lambda(v)
    assert f == pytest.approx(reference.quantization_mse(v, lam), rel=1e-9, abs=1e-300)
    a = np.abs(v)
    grid = np.concatenate([np.linspace(0, a.max() * 1.2, 20001), a, [lam * (1 - 1e-6), lam * (1 + 1e-6)]])
    brute = np.array([reference.quantization_mse(v, x) for x in grid])
    assert f <= brute.min() * (1 + 1e-9) + 1e-300
    # zero lies in F's subgradient: m lam* - sum_{a >= lam*} a <= 0 <= m lam* - sum_{a > lam*} a (lam* is the
    # mean of the clipped |v|, or a breakpoint a_j where the derivative jumps across zero)
    tol = 1e-9 * a.sum() + 1e-300
    assert a.size * lam - a[a >= lam].sum() <= tol and a.size * lam - a[a > lam].sum() >= -tol


def test_analytic_error_matches_the_dither(gen):
    """F(lam) is the Monte-Carlo error of the quantizer, clipped coordinates included."""
    v = gen.standard_normal(512)
    lam = reference.mse_lambda(v)[0]
    tau = gen.uniform(-lam, lam, (4000, v.size))
    q = np.where(v + tau >= 0, lam, -lam)
    assert np.mean(np.sum((q - v) ** 2, axis=1)) == pytest.approx(reference.quantization_mse(v, lam), rel=0.01)
    assert reference.clipping_gain(v, lam) >= 1  # against v itself the best gain never shrinks


def realistic(c, d, n, step, gen, noise=0.5):
    base = gen.standard_normal(d).astype(np.float32)
    xs = [base + noise * gen.standard_normal(d).astype(np.float32) for _ in range(n)]
    rows = np.stack([c.encode(x, step, i + 1).buffer for i, x in enumerate(xs)])
    return np.mean(xs, axis=0), rows


def direction_errors(d=20_000, n=8, trials=4, seed=5):
    """Squared error of the decoded direction / ||mean||^2, per server scale, averaged over dithers."""
    gen = np.random.default_rng(seed)
    out = {}
    cs = {s: compressors.get("fo1bit", lambda_rule="min", server_scale=s, block_size=4096) for s in SERVER_SCALES}
    errs = {s: 0.0 for s in SERVER_SCALES}
    for t in range(trials):
        c0 = cs["eta"]
        mean, rows = realistic(c0, d, n, t, gen)
        w = np.full(n, 1 / n)
        v = c0.aggregate(rows, w, d)
        noise = c0.uplink_noise_bound(rows, w, d)
        for s, c in cs.items():
            x = c.decode(c.encode_flat(v, t, SERVER_STREAM, d, uplink_noise=noise), t, d)
            errs[s] += np.sum((x - mean) ** 2) / np.sum(mean ** 2) / trials
    out.update(errs)
    return out


def test_mse_scale_cuts_the_direction_error_at_n_8():
    errs = direction_errors()
    print("direction error / ||mean||^2 at n = 8:", {k: round(float(v), 2) for k, v in errs.items()})
    assert errs["mse"] < errs["eta"] / 4
    assert errs["mse-shrink"] < errs["mse"]
    assert errs["mse-debias"] < errs["eta"] / 2
    assert errs["drive"] < errs["eta"] / 2


def test_bias_along_the_mean(gen):
    """<E x_hat, mean> / ||mean||^2 over 12 encodings of one draw: about 1 for eta and mse-debias,
    about 1/2 for mse (lam* clips half the block), lower still for mse-shrink."""
    d, n, reps = 8192, 8, 12
    cs = {s: compressors.get("fo1bit", lambda_rule="min", server_scale=s, block_size=4096) for s in SERVER_SCALES}
    base = gen.standard_normal(d).astype(np.float32)
    xs = [base + 0.5 * gen.standard_normal(d).astype(np.float32) for _ in range(n)]
    mean = np.mean(xs, axis=0)
    sums = {s: np.zeros(d) for s in cs}
    w = np.full(n, 1 / n)
    for t in range(reps):
        rows = np.stack([cs["eta"].encode(x, t, i + 1).buffer for i, x in enumerate(xs)])
        v = cs["eta"].aggregate(rows, w, d)
        noise = cs["eta"].uplink_noise_bound(rows, w, d)
        for s, c in cs.items():
            sums[s] += c.decode(c.encode_flat(v, t, SERVER_STREAM, d, uplink_noise=noise), t, d)
    along = {s: float(np.dot(sums[s] / reps, mean) / np.dot(mean, mean)) for s in cs}
    print("along the mean:", {k: round(v, 3) for k, v in along.items()})
    assert abs(along["eta"] - 1) < 0.1 and abs(along["mse-debias"] - 1) < 0.1 and abs(along["drive"] - 1) < 0.1
    assert 0.4 < along["mse"] < 0.6 and along["mse-shrink"] < along["mse"]


@pytest.mark.parametrize("scale", ["mse", "mse-shrink", "mse-debias"])
def test_payload_and_bits_are_consistent(scale, gen):
    """Same payload size; native and numpy kernels give the same bits and float; the float is
    lam* (times the gain)."""
    d = 5000
    c = compressors.get("fo1bit", server_scale=scale, block_size=1024)
    ref = compressors.get("fo1bit", server_scale=scale, block_size=1024, backend="numpy")
    eta = compressors.get("fo1bit", block_size=1024)
    mean, rows = realistic(c, d, 4, 3, gen)
    w = np.full(4, 0.25)
    v = c.aggregate(rows, w, d)
    noise = c.uplink_noise_bound(rows, w, d)
    a = c.encode_flat(v, 3, SERVER_STREAM, d, uplink_noise=noise)
    b = ref.encode_flat(v, 3, SERVER_STREAM, d, uplink_noise=noise)
    assert a.nbytes == eta.encode_flat(v, 3, SERVER_STREAM, d).nbytes == eta.payload_nbytes(d)
    assert np.array_equal(a.bits, b.bits)
    np.testing.assert_allclose(a.scales, b.scales, rtol=1e-6)
    lams, gains, _ = reference.server_scales(v, c.layout(d).flat(), noise if scale == "mse-shrink" else None,
                                          debias=scale == "mse-debias")
    np.testing.assert_allclose(a.scales, lams * gains, rtol=1e-5)
    expected = {"mse": gains == 1, "mse-shrink": gains < 1, "mse-debias": (gains > 1.5) & (gains < 4)}[scale]
    assert np.all(expected), gains


def test_one_workers_payload_is_requantized_exactly(gen):
    """A block of equal |v_j| (one worker's payload) has lam* = |v_j| and no error; the debias gain is 1."""
    v = np.where(gen.random(1024) < 0.5, -0.37, 0.37).astype(np.float32)
    lay = compressors.get("fo1bit", block_size=1024).layout(1024).flat()
    lams, gains, _ = reference.server_scales(v, lay, debias=True)
    assert lams[0] == pytest.approx(0.37, rel=1e-7) and gains[0] == 1
    assert reference.quantization_mse(v, lams[0]) < 1e-12


def test_mse_shrink_needs_the_noise_and_bad_scale_is_refused():
    c = compressors.get("fo1bit", server_scale="mse-shrink")
    with pytest.raises(ValueError, match="uplink noise"):
        c.encode_flat(np.ones(256, dtype=np.float32), 0, SERVER_STREAM, 256)
    with pytest.raises(ValueError, match="server_scale"):
        compressors.get("fo1bit", server_scale="median")


def worker_vectors(gen, d):
    return {"gaussian": gen.standard_normal(d), "heavy-tailed": gen.standard_t(2, d),
            "sparse": gen.standard_normal(d) * (gen.random(d) < 0.02)}


@pytest.mark.parametrize("kind", ["gaussian", "heavy-tailed", "sparse"])
def test_worker_scale_cuts_the_error_and_keeps_the_direction(kind, gen):
    """One worker's decoded vector over 16 dithers (ranks): eta is unbiased with an error of about
    2 ln(2m / eta) - 1 times ||x||^2; mse-debias on the flattened block cuts it below 1.2 ||x||^2
    and stays unbiased along x to first order; mse halves the step along x."""
    d, reps = 20_000, 16
    x = worker_vectors(gen, d)[kind].astype(np.float32)
    errors, along = {}, {}
    for scale in WORKER_SCALES:
        c = compressors.get("fo1bit", lambda_rule="min", worker_scale=scale, block_size=4096)
        decoded = [c.decode(c.encode(x, 3, rank), 3, d) for rank in range(reps)]
        errors[scale] = np.mean([np.sum((xh - x) ** 2) for xh in decoded]) / np.sum(x ** 2)
        along[scale] = float(np.dot(np.mean(decoded, axis=0), x) / np.dot(x, x))
    print(kind, "error / ||x||^2:", {k: round(float(v), 2) for k, v in errors.items()}, "along x:",
          {k: round(v, 3) for k, v in along.items()})
    assert errors["eta"] > 10 and errors["mse-debias"] < 1.2 and errors["mse"] < 0.6 and errors["drive"] < 0.65
    assert abs(along["eta"] - 1) < 0.05 and abs(along["mse-debias"] - 1) < 0.1 and 0.3 < along["mse"] < 0.7
    assert along["drive"] == pytest.approx(1, abs=1e-4)  # <x_hat, x> = ||x||^2 for every encoding


@pytest.mark.parametrize("kind", ["gaussian", "heavy-tailed", "sparse", "pairs"])
def test_drive_is_unbiased_through_the_rotation(kind, gen):
    """DRIVE does not dither, so its mean over 64 steps (64 rotations) is what shows a bias: the
    squared distance of that mean from x stays at the error of one encoding / 64, as for an
    unbiased quantizer. "pairs": two equal coordinates per block, whose flattened block is half
    exact zeros (the ties, which take the dither's sign)."""
    d, reps = 16_384, 64
    if kind == "pairs":
        x = np.zeros(d)
        x[::4096], x[7::4096] = 1.0, 1.0
    else:
        x = worker_vectors(gen, d)[kind]
    x = x.astype(np.float32)
    c = compressors.get("fo1bit", worker_scale="drive", block_size=4096)
    decoded = np.array([c.decode(c.encode(x, step, 1), step, d) for step in range(reps)], dtype=np.float64)
    norm = np.sum(x.astype(np.float64) ** 2)
    error = np.mean(np.sum((decoded - x) ** 2, axis=1)) / norm
    bias = np.sum((decoded.mean(axis=0) - x) ** 2) / norm
    print(kind, f"error / ||x||^2 {error:.3f}, ||mean - x||^2 / ||x||^2 {bias:.4f} (error / {reps}: "
                f"{error / reps:.4f})")
    assert error < 0.65 if kind != "pairs" else error < 1.05
    assert bias < 1.5 * error / reps


@pytest.mark.parametrize("kind", ["gaussian", "heavy-tailed", "sparse"])
def test_downlink_feedback_telescopes(kind, gen):
    """--downlink feedback's server over 64 steps of the same mean x: the broadcasts sum to 64 x
    less the last error memory, and their mean lies far closer to x than without the memory, whose
    mean carries the error of one re-quantization / 64 (measured 0.009 against 0.0003)."""
    from fobsgd_mpi.algorithms.fo_sgd import requantize

    d, reps = 16_384, 64
    x = worker_vectors(gen, d)[kind].astype(np.float32)
    c = compressors.get("fo1bit", server_scale="drive", block_size=4096)
    out = c.spec(d).empty()
    error, kept, plain = np.zeros(d, np.float32), [], []
    for step in range(reps):
        error = requantize(c, x, step, out, error)
        kept.append(c.decode(out, step, d).astype(np.float64))
        assert len(requantize(c, x, step, out, np.zeros(0, np.float32))) == 0
        plain.append(c.decode(out, step, d).astype(np.float64))
    assert_memory_telescopes(kind, x, kept, error, plain)


def assert_memory_telescopes(kind, x, kept, error, plain):
    """`kept`: what K steps of the same x sent with an error memory (its last value `error`),
    `plain` without one: the kept ones sum to K x less the memory, and their mean lies at least 10x
    closer to x than the plain ones'."""
    norm = np.sum(x.astype(np.float64) ** 2)
    np.testing.assert_allclose(np.sum(kept, axis=0) + error, len(kept) * x.astype(np.float64),
                               atol=1e-3 * np.sqrt(norm))
    with_memory, without = (np.sum((np.mean(v, axis=0) - x) ** 2) / norm for v in (kept, plain))
    print(kind, f"||mean - x||^2 / ||x||^2: with the memory {with_memory:.5f}, without {without:.5f}")
    assert with_memory < without / 10


class OneWorker:
    """A parameter server's worker rank without MPI: what an algorithm's encode_up needs."""

    rank, size, n_workers, is_worker, is_server = 1, 2, 1, True, False

    def uplink(self, payload):
        return None

    downlink = uplink

    def types(self, spec):
        return SimpleNamespace(Get_size=lambda: spec.nbytes)


@pytest.mark.parametrize("kind", ["gaussian", "heavy-tailed", "sparse"])
def test_uplink_feedback_telescopes(kind, gen):
    """--uplink feedback's worker over 64 steps of the same gradient x: the payloads it sends sum to
    64 x less its last error memory, and their mean lies far closer to x than without the memory
    (--uplink plain keeps none: each payload is C(x) alone)."""
    d, reps = 16_384, 64
    x = worker_vectors(gen, d)[kind].astype(np.float32)
    workers = {uplink: FOSGD(OneWorker(), d, AlgorithmOptions(uplink=uplink, block_size=4096))
               for uplink in ("feedback", "plain")}
    sent = {uplink: [] for uplink in workers}
    for step in range(reps):
        for uplink, worker in workers.items():
            worker.encode_up(x, step)
            sent[uplink].append(worker.up.decode(worker.up_dev, step, d).astype(np.float64))
    assert len(workers["plain"].error) == 0
    assert_memory_telescopes(kind, x, sent["feedback"], workers["feedback"].error, sent["plain"])


@pytest.mark.parametrize("scale", ["mse", "mse-debias", "drive"])
def test_worker_scale_payload(scale, gen):
    """The eta payload's size; native and numpy give the same bits (floats to rounding); the fused
    encode is the server's rule applied to the flattened vector, under the worker's own stream."""
    d = 9000
    x = gen.standard_normal(d).astype(np.float32) * gen.uniform(0.1, 10, d).astype(np.float32)
    c = compressors.get("fo1bit", worker_scale=scale, block_size=1024)
    ref = compressors.get("fo1bit", worker_scale=scale, block_size=1024, backend="numpy")
    a, b = c.encode(x, 4, 2), ref.encode(x, 4, 2)
    assert a.nbytes == compressors.get("fo1bit", block_size=1024).payload_nbytes(d)
    assert np.array_equal(a.bits, b.bits)
    np.testing.assert_allclose(a.scales, b.scales, rtol=1e-6)
    server = compressors.get("fo1bit", server_scale=scale, block_size=1024)
    assert np.array_equal(a.buffer, server.encode_flat(server.flatten(x, 4, d), 4, 2, d).buffer)
    if scale == "drive":  # no dither: only the rotation (the step) changes the bits; the scale is ||y||^2 / ||y||_1
        assert np.array_equal(a.bits, c.encode(x, 4, 3).bits) and not np.array_equal(a.bits, c.encode(x, 5, 2).bits)
        y = server.flatten(x, 4, d).astype(np.float64)
        blocks = [y[off : off + m] for _, off, m, _ in c.layout(d).blocks()]
        np.testing.assert_allclose(a.scales, [np.sum(b ** 2) / np.sum(np.abs(b)) for b in blocks], rtol=1e-5)
    else:
        assert not np.array_equal(a.bits, c.encode(x, 4, 3).bits)  # each rank dithers with its own stream


def test_worker_scale_on_torch_and_its_default(gen):
    """The torch twin gives the native payload; unset, FO-SGD takes drive on both sides at any number of
    workers, dithered-sign (which refuses drive) mse-debias."""
    import torch

    from fobsgd_mpi.algorithms.fo_sgd import DitheredSignSGD

    for n in (1, 2, 8, 64):
        assert FOSGD.compressor_defaults(AlgorithmOptions(), n) == {"server_scale": "drive", "worker_scale": "drive"}
    assert DitheredSignSGD.compressor_defaults(AlgorithmOptions(), 8)["worker_scale"] == "mse-debias"
    x = gen.standard_normal(70_001).astype(np.float32)
    on_torch = compressors.get("fo1bit", worker_scale="mse-debias", backend="torch").encode(torch.from_numpy(x), 2, 5)
    native = compressors.get("fo1bit", worker_scale="mse-debias").encode(x, 2, 5)
    assert np.array_equal(on_torch.buffer.numpy(), native.buffer)
    with pytest.raises(ValueError, match="worker_scale"):
        compressors.get("fo1bit", worker_scale="mse-shrink")
    with pytest.raises(ValueError, match="random rotation"):
        compressors.get("dithered-sign", worker_scale="drive")


SCALE_CASES = {"mse": ("mse", ()), "mse-debias": ("mse-debias", ()), "worker-eta": ("mse", ("--worker-scale", "eta")),
               "drive": ("drive", ("--worker-scale", "drive")),
               "mse-shrink-sharded": ("mse-shrink", ("--servers", "all", "--block-size", "256")),
               "mse-shrink-fresh": ("mse-shrink", ("--downlink", "fresh-rotation"))}


@pytest.fixture(scope="module")
def scale_runs(tmp_path_factory):
    """Each of SCALE_CASES, 20 fo-sgd steps on 3 ranks, in one job."""
    from .mpi_helpers import train_runs

    return train_runs(3, tmp_path_factory.mktemp("scale"), {
        name: ["--algorithm", "fo-sgd", "--server-scale", scale, *extra, "--steps", "20", "--check-every", "10",
               "--dataset", "synthetic-logreg", "--model", "mlp", "--width", "32"]
        for name, (scale, extra) in SCALE_CASES.items()})


@pytest.mark.mpi
@pytest.mark.parametrize("case", SCALE_CASES)
def test_mpirun_replicas_stay_bit_identical_and_payload_is_unchanged(case, scale_runs):
    """3 ranks, a cross-rank checksum every 10 steps (the run fails if replicas differ); both
    directions carry exactly the fo1bit payload the eta rule carries."""
    import h5py

    scale = SCALE_CASES[case][0]
    out, summary = scale_runs[case][:2]
    assert np.isfinite(summary["final_test_loss"])
    with h5py.File(out) as f:
        d = int(f.attrs["d"])
        cfg = json.loads(f.attrs["config"])
        assert cfg["server_scale"] == scale
        eta = compressors.get("fo1bit", **({"block_size": cfg["block_size"]} if cfg["block_size"] else {}))
        nbytes = eta.payload_nbytes(d)
        assert set(f["iterations/bytes_up"][:].tolist()) == {nbytes}
        assert set(f["iterations/bytes_down"][:].tolist()) == {nbytes}
