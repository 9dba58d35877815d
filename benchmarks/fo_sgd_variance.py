"""Where FO-SGD's noise comes from: the error of the averaged uplink and of the broadcast direction.

n workers hold noisy copies g_i = g + noise of one gradient; each sends its FO-SGD payload, the
server sums them in the flattened domain and re-quantizes the sum (--downlink flat) or decodes
it and quantizes it again after a fresh rotation (fresh-rotation). Prints, relative to
||mean g_i||^2, the squared error of the uplink average (what an fp32 downlink would deliver)
and of the direction every worker decodes, per block size and n. The uplink error falls as 1/n;
the one-bit downlink adds about one worker's error back whatever n is, which is why FO-SGD's
accuracy does not improve with more workers the way sgd's does. Each server scale
(--server-scale: eta, mse, mse-shrink, mse-debias, drive) is shown side by side on the same uplink
payloads (the workers' --worker-scale), with the direction's bias: mse clips the sum on purpose and
mse-shrink scales it down, so both trade bias for variance; mse-debias scales mse back up to a unit
gain along the mean, and drive has that gain by construction. Writes results/fo_sgd_variance-*.h5.

    python benchmarks/fo_sgd_variance.py [--d 78858] [--workers 1 2 4 8 16] [--block-sizes 65536 1024]
        [--worker-scale drive] [--server-scales eta mse mse-shrink mse-debias drive] [--trials 2] [--repeats 8]
"""
import argparse

import numpy as np

from fobsgd_mpi import compressors
from fobsgd_mpi.algorithms.base import SERVER_STREAM
from fobsgd_mpi.compressors.fo1bit import SERVER_SCALES, WORKER_SCALES
from fobsgd_mpi.config import FLOAT, INT, SEED_MAX, ScriptParser, _power_of_two, flag_type
from fobsgd_mpi.benchmarking import format_table, results_path, save_records


def relative_errors(cs, d, n, trials, repeats, noise, gen):
    """Per server scale (cs: name -> compressor): the squared error of the uplink average, of the flat
    and of the fresh-rotation direction, and the direction's squared bias and its component along the
    mean, all relative to ||mean||^2. Each of `trials` draws of the workers' vectors is encoded
    `repeats` times (fresh rotations and dithers); the bias is E[x_hat] - mean over those repeats,
    its squared norm estimated without the repeats' leftover variance: (R ||avg - mean||^2 - mean of
    ||x_hat - mean||^2) / (R - 1)."""
    base = gen.standard_normal(d).astype(np.float32)
    kinds = ("uplink", "flat", "fresh")
    err = {s: dict.fromkeys(kinds, 0.0) for s in cs}
    bias = {s: dict.fromkeys(kinds, 0.0) for s in cs}
    along = {s: dict.fromkeys(kinds, 0.0) for s in cs}
    unit = {s: dict.fromkeys(kinds, 0.0) for s in cs}
    c0 = next(iter(cs.values()))  # the workers' encoding is the same whatever the server's scale
    w = np.full(n, 1 / n)
    for t in range(trials):
        xs = [base + noise * gen.standard_normal(d).astype(np.float32) for _ in range(n)]
        mean = np.mean(xs, axis=0)
        norm2 = float(np.sum(mean.astype(np.float64) ** 2))
        sums = {s: {k: np.zeros(d) for k in kinds} for s in cs}
        errs = {s: dict.fromkeys(kinds, 0.0) for s in cs}
        sq = {s: dict.fromkeys(kinds, 0.0) for s in cs}
        for r in range(repeats):
            step = t * repeats + r
            rows = np.stack([c0.encode(x, step, i + 1).buffer for i, x in enumerate(xs)])
            v = c0.aggregate(rows, w, d)
            noise_bound = c0.uplink_noise_bound(rows, w, d)
            up = c0.unflatten(v, step, d)
            fresh_step = step | (1 << 62)
            for name, c in cs.items():
                flat = c.decode(c.encode_flat(v, step, SERVER_STREAM, d, uplink_noise=noise_bound), step, d)
                y = c.flatten(up, fresh_step, d)
                fresh = c.decode(c.encode_flat(y, fresh_step, SERVER_STREAM, d, uplink_noise=noise_bound),
                                 fresh_step, d)
                for k, x in zip(kinds, (up, flat, fresh)):
                    sums[name][k] += x
                    errs[name][k] += float(np.sum((x - mean) ** 2)) / repeats
                    sq[name][k] += float(np.sum(x.astype(np.float64) ** 2)) / repeats
        for name in cs:
            for k in kinds:
                avg = sums[name][k] / repeats
                b2 = (repeats * float(np.sum((avg - mean) ** 2)) - errs[name][k]) / (repeats - 1)
                err[name][k] += errs[name][k] / norm2 / trials
                bias[name][k] += b2 / norm2 / trials
                a = float(np.dot(avg, mean)) / norm2
                along[name][k] += a / trials
                # E||x_hat / a - mean||^2 / ||mean||^2; nan where the direction is all but zero (a = 0)
                unit[name][k] += (sq[name][k] / (a * a * norm2) - 1 if a > 1e-9 else float("nan")) / trials
    return err, bias, along, unit


def main(argv=None):
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d", type=flag_type(INT, bounds=(1, 2**31)), default=78_858,
                   help="vector length (78,858: the default MNIST-1D MLP)")
    p.add_argument("--workers", type=flag_type(INT, bounds=(1, 1024)), nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--block-sizes", type=flag_type(INT, bounds=(64, 2**30), rule=_power_of_two), nargs="+",
                   default=[1 << 16, 1 << 10])
    p.add_argument("--lambda-rule", default="min", choices=("norm", "max", "min"))
    p.add_argument("--worker-scale", default="drive", choices=WORKER_SCALES, help="the workers' scale rule")
    p.add_argument("--server-scales", nargs="+", default=list(SERVER_SCALES), choices=SERVER_SCALES,
                   help="the server's scale rules to compare")
    p.add_argument("--noise", type=flag_type(FLOAT, bounds=(0, 1e6)), default=0.5,
                   help="per-worker noise, relative to the common part")
    p.add_argument("--trials", type=flag_type(INT, bounds=(1, 10**6)), default=2, help="draws of the workers' vectors")
    p.add_argument("--repeats", type=flag_type(INT, bounds=(2, 10**6)), default=8,
                   help="encodings of each draw (rotations, dithers); 2 or more: the bias estimate subtracts the "
                        "repeats' variance")
    p.add_argument("--seed", type=flag_type(INT, bounds=(0, SEED_MAX)), default=0)
    args = p.parse_args(argv)
    gen = np.random.default_rng(args.seed)
    scales = list(dict.fromkeys(args.server_scales))
    records = []
    for block in args.block_sizes:
        cs = {s: compressors.get("fo1bit", block_size=block, lambda_rule=args.lambda_rule,
                                 worker_scale=args.worker_scale, server_scale=s) for s in scales}
        for n in args.workers:
            err, bias, along, unit = relative_errors(cs, args.d, n, args.trials, args.repeats, args.noise, gen)
            for s in scales:
                records.append({"block_size": block, "workers": n, "server_scale": s,
                                "uplink_mean": err[s]["uplink"], "downlink_flat": err[s]["flat"],
                                "bias2_flat": bias[s]["flat"], "along_mean_flat": along[s]["flat"],
                                "unit_gain_flat": unit[s]["flat"],
                                "downlink_fresh_rotation": err[s]["fresh"], "bias2_fresh_rotation": bias[s]["fresh"]})
    print(f"# d = {args.d:,}, lambda rule {args.lambda_rule}, workers' scale {args.worker_scale}, squared error / ||mean of the workers' vectors||^2, "
          f"{args.trials} draws x {args.repeats} encodings; bias^2 = ||E x_hat - mean||^2 / ||mean||^2, "
          f"along = a = <E x_hat, mean> / ||mean||^2 (1: no shrinkage), "
          f"at unit gain = E||x_hat / a - mean||^2 / ||mean||^2 (the noise at the same effective step)")
    print(format_table(records, [("block_size", "block", "{}"), ("workers", "n", "{}"),
                                 ("server_scale", "server scale", "{}"),
                                 ("uplink_mean", "uplink average [x]", "{:.2f}"),
                                 ("downlink_flat", "direction, flat [x]", "{:.2f}"),
                                 ("bias2_flat", "bias^2, flat [x]", "{:.3f}"),
                                 ("along_mean_flat", "along mean, flat", "{:.3f}"),
                                 ("unit_gain_flat", "flat at unit gain [x]", "{:.2f}"),
                                 ("downlink_fresh_rotation", "direction, fresh rotation [x]", "{:.2f}"),
                                 ("bias2_fresh_rotation", "bias^2, fresh [x]", "{:.3f}")]))
    path = results_path("fo_sgd_variance")
    units = {k: "squared error / squared norm of the mean" for k in
             ("uplink_mean", "downlink_flat", "downlink_fresh_rotation", "bias2_flat", "bias2_fresh_rotation")}
    units["along_mean_flat"] = "<E x_hat, mean> / squared norm of the mean"
    units["unit_gain_flat"] = "E||x_hat / along - mean||^2 / squared norm of the mean"
    save_records(path, "fo_sgd_variance", records, units, meta=vars(args))
    print(f"# wrote {path}")


if __name__ == "__main__":
    main()
