"""Encode and decode a real gradient with every compressor; print bits, error and speed.

The gradient is one minibatch of an MLP on scikit-learn's bundled digits (no download).

    python -m fobsgd_mpi.demo [--width 512] [--batch 64]
"""
import argparse

import numpy as np

from . import compressors, data, native
from .benchmarking import best_time, format_table


def mlp_gradient(width, batch, seed=0):
    import torch

    torch.manual_seed(seed)
    x, y = data.digits()
    x = torch.tensor(x[:batch] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[:batch])
    model = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                                torch.nn.ReLU(), torch.nn.Linear(width, 10))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args(argv)
    g = mlp_gradient(args.width, args.batch)
    d = len(g)
    records = []
    for name in compressors.names():
        c = compressors.get(name)
        payload = c.encode(g, 0, 1)
        err = np.linalg.norm(c.decode(payload, 0, d) - g) / np.linalg.norm(g)
        enc = best_time(lambda: c.encode(g, 0, 1, out=payload), 5)
        dec = best_time(lambda: c.decode(payload, 0, d), 5)
        records.append({"name": name, "bits": 8 * payload.nbytes / d, "err": err,
                        "enc": 4 * d / enc / 1e6, "dec": 4 * d / dec / 1e6})
    print(f"# MLP gradient on digits: d = {d:,} parameters; kernels: {native.isa()}")
    print(format_table(records, [("name", "compressor", "{}"), ("bits", "bits/coord", "{:.4f}"),
                                 ("err", "||x_hat - g|| / ||g||", "{:.3f}"), ("enc", "encode [MB/s]", "{:.0f}"),
                                 ("dec", "decode [MB/s]", "{:.0f}")]))


if __name__ == "__main__":
    main()
