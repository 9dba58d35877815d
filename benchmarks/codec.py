"""Encode / decode / server-aggregate throughput of every compressor, in GB/s of fp32 gradient.

Also the ratios the kernels are held to, measured side by side in this run:
  fo1bit encode of 2^24 floats against the FWHT alone (blocked as the encode does, and as one row);
  aggregating 8 fo1bit payloads of 2^24 coordinates against decoding one of them.

    python benchmarks/codec.py [--sizes 1000000 25000000] [--repeats 5]
"""
import argparse

import numpy as np

from fobsgd_mpi import compressors, native
from fobsgd_mpi.benchmarking import best_time, format_table, results_path, save_records


def throughput(records, d, repeats):
    x = np.random.default_rng(0).standard_normal(d).astype(np.float32)
    for name in compressors.names():
        c = compressors.get(name)
        reps = repeats if name != "qsgd" else 1
        payload = c.encode(x, 0, 1)
        out = np.empty(d, dtype=np.float32)
        enc = best_time(lambda: c.encode(x, 0, 1, out=payload), reps)
        dec = best_time(lambda: c.decode(payload, 0, d, out=out), reps)
        agg = None
        if hasattr(c, "aggregate"):
            rows = np.stack([payload.buffer] * 8)
            w = np.full(8, 1 / 8, dtype=np.float32)
            agg = best_time(lambda: c.aggregate(rows, w, d), reps) / 8
        records.append({"compressor": name, "d": d, "bits_per_coord": c.bits_per_coordinate(d),
                        "encode_GBps": 4 * d / enc / 1e9, "decode_GBps": 4 * d / dec / 1e9,
                        "aggregate_GBps": 4 * d / agg / 1e9 if agg else None})


def goals(repeats):
    n = 1 << 24
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    c = compressors.get("fo1bit")
    y = x.copy()
    fwht_blocks = best_time(lambda: native.fwht_(y.reshape(-1, c.block_size)), repeats)
    fwht_row = best_time(lambda: native.fwht_(y), repeats)
    payload = c.encode(x, 0, 1)
    encode = best_time(lambda: c.encode(x, 0, 1, out=payload), repeats)
    out = np.empty(n, dtype=np.float32)
    decode = best_time(lambda: c.decode(payload, 0, n, out=out), repeats)
    rows = np.stack([c.encode(x, 0, r).buffer for r in range(8)])
    w = np.full(8, 1 / 8, dtype=np.float32)
    v = np.empty(c.layout(n).padded, dtype=np.float32)
    aggregate = best_time(lambda: c.aggregate(rows, w, n, out=v), repeats)
    return [
        {"what": "fo1bit encode / FWHT blocks of 2^16 (goal <= 3)", "ratio": encode / fwht_blocks,
         "a_ms": encode * 1e3, "b_ms": fwht_blocks * 1e3},
        {"what": "fo1bit encode / FWHT one row of 2^24", "ratio": encode / fwht_row, "a_ms": encode * 1e3,
         "b_ms": fwht_row * 1e3},
        {"what": "aggregate 8 payloads / decode 1 (goal < 1)", "ratio": aggregate / decode,
         "a_ms": aggregate * 1e3, "b_ms": decode * 1e3},
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 25_000_000])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(f"# kernels: {native.isa()}, one thread")
    records = []
    for d in args.sizes:
        throughput(records, d, args.repeats)
    print(format_table(records, [("compressor", "compressor", "{}"), ("d", "d", "{:d}"),
                                 ("bits_per_coord", "bits/coord", "{:.4f}"), ("encode_GBps", "encode [GB/s]", "{:.3f}"),
                                 ("decode_GBps", "decode [GB/s]", "{:.3f}"),
                                 ("aggregate_GBps", "aggregate per payload [GB/s]", "{:.3f}")]))
    ratios = goals(args.repeats)
    print(format_table(ratios, [("what", "ratio", "{}"), ("ratio", "value [x]", "{:.2f}"),
                                ("a_ms", "first [ms]", "{:.2f}"), ("b_ms", "second [ms]", "{:.2f}")]))
    path = results_path("codec")
    units = {"encode_GBps": "GB/s of fp32 input", "decode_GBps": "GB/s of fp32 output",
             "aggregate_GBps": "GB/s of fp32 output per payload", "bits_per_coord": "bit", "d": "coordinates"}
    save_records(path, "throughput", records, units, meta={"isa": native.isa(), "goals": ratios})
    print(f"# wrote {path}")


if __name__ == "__main__":
    main()
