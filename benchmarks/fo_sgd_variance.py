"""Where FO-SGD's noise comes from: the error of the averaged uplink and of the broadcast direction.

n workers hold noisy copies g_i = g + noise of one gradient; each sends its FO-SGD payload, the
server sums them in the flattened domain and re-quantizes the sum (--downlink flat) or decodes
it and quantizes it again after a fresh rotation (fresh-rotation). Prints, relative to
||mean g_i||^2, the squared error of the uplink average (what an fp32 downlink would deliver)
and of the direction every worker decodes, per block size and n. The uplink error falls as 1/n;
the one-bit downlink adds about one worker's error back whatever n is, which is why FO-SGD's
accuracy does not improve with more workers the way sgd's does. Writes results/fo_sgd_variance-*.h5.

    python benchmarks/fo_sgd_variance.py [--d 78858] [--workers 1 2 4 8 16] [--block-sizes 65536 1024]
"""
import argparse

import numpy as np

from fobsgd_mpi import compressors
from fobsgd_mpi.algorithms.base import SERVER_STREAM
from fobsgd_mpi.benchmarking import format_table, results_path, save_records


def relative_errors(c, d, n, trials, noise, gen):
    """(uplink average, flat downlink, fresh-rotation downlink) squared errors / ||mean||^2."""
    base = gen.standard_normal(d).astype(np.float32)
    out = np.zeros(3)
    for t in range(trials):
        xs = [base + noise * gen.standard_normal(d).astype(np.float32) for _ in range(n)]
        mean = np.mean(xs, axis=0)
        rows = np.stack([c.encode(x, t, i + 1).buffer for i, x in enumerate(xs)])
        v = c.aggregate(rows, np.full(n, 1 / n), d)
        up = c.unflatten(v, t, d)
        flat = c.decode(c.encode_flat(v, t, SERVER_STREAM, d), t, d)
        fresh_step = t | (1 << 62)
        fresh = c.decode(c.encode(up, fresh_step, SERVER_STREAM), fresh_step, d)
        out += [np.sum((y - mean) ** 2) / np.sum(mean ** 2) for y in (up, flat, fresh)]
    return out / trials


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d", type=int, default=78_858, help="vector length (78,858: the default MNIST-1D MLP)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--block-sizes", type=int, nargs="+", default=[1 << 16, 1 << 10])
    p.add_argument("--lambda-rule", default="min", choices=("norm", "max", "min"))
    p.add_argument("--noise", type=float, default=0.5, help="per-worker noise, relative to the common part")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    gen = np.random.default_rng(args.seed)
    records = []
    for block in args.block_sizes:
        c = compressors.get("fo1bit", block_size=block, lambda_rule=args.lambda_rule)
        for n in args.workers:
            up, flat, fresh = relative_errors(c, args.d, n, args.trials, args.noise, gen)
            records.append({"block_size": block, "workers": n, "uplink_mean": up, "downlink_flat": flat,
                            "downlink_fresh_rotation": fresh})
    print(f"# d = {args.d:,}, lambda rule {args.lambda_rule}, squared error / ||mean of the workers' vectors||^2, "
          f"mean of {args.trials} trials")
    print(format_table(records, [("block_size", "block", "{}"), ("workers", "n", "{}"),
                                 ("uplink_mean", "uplink average [x]", "{:.2f}"),
                                 ("downlink_flat", "direction, flat downlink [x]", "{:.2f}"),
                                 ("downlink_fresh_rotation", "direction, fresh rotation [x]", "{:.2f}")]))
    path = results_path("fo_sgd_variance")
    save_records(path, "fo_sgd_variance", records, {k: "squared error / squared norm of the mean" for k in
                                                     ("uplink_mean", "downlink_flat", "downlink_fresh_rotation")},
                 meta=vars(args))
    print(f"# wrote {path}")


if __name__ == "__main__":
    main()
