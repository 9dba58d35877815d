"""LIEC-SGD's synchronization step against the reference's (github chengyif/LIEC-SGD main.py, the
`liec` branch: at (t + 1) % H == 0 average the models, all-reduce the fp32 gradients, add the
server error e_s and reset it), derived here in plain numpy and compared bit for bit with a real
3-rank run: rank 0 serves, ranks 1 and 2 work, H = 2, 4 steps, no momentum."""
import h5py
import numpy as np
import pytest
import torch

from fobsgd_mpi import compressors, data, models, rng
from fobsgd_mpi.layout import BlockLayout

from .mpi_helpers import train

SEED, LR, H, STEPS, WIDTH, BATCH = 3, 0.05, 2, 4, 16, 8
HALF = np.float32(0.5)


def scaled_sign(x, lay, step):
    """C(x) per block: mean |x_b| times sign(x); an exact zero takes its block's shared random bit."""
    out = np.empty_like(x)
    for b, off, _, valid in lay.blocks():
        xb = x[off : off + valid]
        scale = np.float32(np.abs(xb.astype(np.float64)).sum() / valid)
        up = (xb > 0) | ((xb == 0) & rng.shared_bits(SEED, step, b, valid, rng.PURPOSE_ZERO_SIGN))
        out[off : off + valid] = np.where(up, scale, -scale)
    return out


def reference_run():
    """The two workers' models after STEPS steps of the reference's LIEC-SGD (and d)."""
    ds = data.load("synthetic-logreg", SEED)
    model = models.FlatModel(models.build("mlp", ds.n_features, ds.n_classes, WIDTH, SEED))
    lay = BlockLayout(model.d)
    samplers = []
    for shard in range(2):
        idx = data.shards(ds.y_train, 2, SEED)[shard]
        samplers.append(data.BatchSampler(ds.x_train[idx], ds.y_train[idx], BATCH, seed=(SEED, shard)))
    xs = [model.params.copy(), model.params.copy()]
    e_s = np.zeros(model.d, np.float32)

    def gradient(i):
        model.params[:] = xs[i]
        model.gradient(*samplers[i].next(), torch.nn.functional.cross_entropy)
        return model.grads.copy()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks run (OMP_NUM_THREADS=1), for the same gradient bits
    try:
        for t in range(STEPS):
            g = [gradient(0), gradient(1)]
            if (t + 1) % H == 0:  # models averaged, then the fp32 mean gradient + e_s, e_s reset
                average = (xs[0] + xs[1]) * HALF
                xs = [average, average]
                directions = [(g[0] + g[1]) / np.float32(2) + e_s] * 2
                e_s = np.zeros_like(e_s)
            else:  # compressed both ways, each worker adding its own fresh error
                c = [scaled_sign(gi, lay, t) for gi in g]
                v = HALF * c[0] + HALF * c[1] + e_s
                cv = scaled_sign(v, lay, t)
                e_s = v - cv
                directions = [cv + (g[i] - c[i]) for i in range(2)]
            # torch.optim.SGD's step without momentum, as the harness and the reference code take it
            xs = [torch.from_numpy(x.copy()).add_(torch.from_numpy(u), alpha=-LR).numpy() for x, u in zip(xs, directions)]
    finally:
        torch.set_num_threads(threads)
    return xs, model.d


@pytest.mark.mpi
def test_liec_synchronization_step_is_the_reference_update(tmp_path):
    out, summary = train(3, tmp_path, "--algorithm", "liec-sgd", "--dataset", "synthetic-logreg", "--model", "mlp",
                         "--width", WIDTH, "--steps", STEPS, "--liec-period", H, "--lr", LR, "--momentum", "0",
                         "--lr-schedule", "constant", "--seed", SEED, "--batch-size", BATCH, "--check-every", H,
                         "--eval-every", STEPS)
    (x1, x2), d = reference_run()
    with h5py.File(out) as f:
        got, up, down = f["final_params"][:], f["iterations/bytes_up"][:], f["iterations/bytes_down"][:]
    assert np.array_equal(x1, x2) and np.array_equal(got, x1)
    one_bit = compressors.get("scaled-sign", sign_scale="block").payload_nbytes(d)
    sync = 4 * d + 4 * d  # the model's Reduce / Bcast and the gradient's Gather / Bcast, fp32
    assert up.tolist() == down.tolist() == [one_bit, sync] * (STEPS // 2)
    assert summary["bytes_up_per_worker"] == summary["bytes_down_per_worker"] == up.sum()  # ended on a sync


def test_liec_bytes_at_h32_are_a_tenth_of_sgd():
    """31 one-bit steps + one fp32 gradient and model average: about 10.8x fewer bytes than sgd."""
    d = 1_000_000
    liec = 31 * compressors.get("scaled-sign", sign_scale="block").payload_nbytes(d) + 8 * d
    assert 32 * 4 * d / liec == pytest.approx(10.8, abs=0.05)
