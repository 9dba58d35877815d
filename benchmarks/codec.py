"""Encode / decode / server-aggregate throughput of every compressor, in GB/s of fp32 gradient.

Also the ratios the kernels are held to, measured side by side in this run:
  fo1bit encode of 2^24 floats against the FWHT alone (blocked as the encode does, and as one row),
  and the encode with the workers' --worker-scale mse-debias and drive (FO-SGD's default) against eta;
  aggregating 8 fo1bit payloads of 2^24 coordinates against decoding one of them;
  the FO-SGD server's re-quantization of that sum with --server-scale mse-debias and drive against eta, and
  the mse_scales kernel against its numpy (sorting) reference;
  scaled sign with one scale per tensor (ResNet-50's 161 tensors, d = 25,557,032) against one per
  block: encode, and the server's sum of 8 payloads.

    python benchmarks/codec.py [--sizes 1000000 25000000] [--repeats 5]

    python benchmarks/codec.py --device cuda [--sizes 1000000 25000000]

instead times the one-bit codec on torch tensors on that device (cpu runs the same code, as a dry
run): fo1bit (rotated) and dithered sign encode / decode and an 8-payload aggregate, with the CUDA
kernels (fobsgd_mpi._native_cuda) and with the torch codec's own operations, in GB/s of fp32 and
as a fraction of the device's copy bandwidth: the least bytes the call must move (fp32 in or out,
one bit per coordinate the other way) per second over the bytes a same-size copy moves per second.
"""
import argparse

import numpy as np

from fobsgd_mpi import arrays, compressors, native, reference
from fobsgd_mpi.benchmarking import best_time, format_table, out_file, results_path, save_records
from fobsgd_mpi.config import INT, ScriptParser, flag_type
from fobsgd_mpi.errors import UsageError


def gradient(n, seed):
    """n standard normal float32s in a 64-byte-aligned array, as the harness's own vectors are."""
    x = arrays.aligned_zeros(n)
    x[:] = np.random.default_rng(seed).standard_normal(n)
    return x


def throughput(records, d, repeats):
    x = gradient(d, 0)
    for name in compressors.names():
        c = compressors.get(name)
        reps = repeats if name != "qsgd" else 1
        payload = c.encode(x, 0, 1)
        out = arrays.aligned_zeros(d)
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
    x = gradient(n, 1)
    c = compressors.get("fo1bit")
    y = gradient(n, 1)
    fwht_blocks = best_time(lambda: native.fwht_(y.reshape(-1, c.block_size)), repeats)
    fwht_row = best_time(lambda: native.fwht_(y), repeats)
    payload = c.encode(x, 0, 1)
    encode = best_time(lambda: c.encode(x, 0, 1, out=payload), repeats)
    workers = {scale: compressors.get("fo1bit", worker_scale=scale) for scale in ("mse-debias", "drive")}
    worker = {scale: best_time(lambda: w.encode(x, 0, 1, out=payload), repeats) for scale, w in workers.items()}
    out = arrays.aligned_zeros(n)
    decode = best_time(lambda: c.decode(payload, 0, n, out=out), repeats)
    rows = np.stack([c.encode(x, 0, r).buffer for r in range(8)])
    w = np.full(8, 1 / 8, dtype=np.float32)
    v = arrays.aligned_zeros(c.layout(n).padded)
    aggregate = best_time(lambda: c.aggregate(rows, w, n, out=v), repeats)
    servers = {scale: compressors.get("fo1bit", server_scale=scale) for scale in ("eta", "mse-debias", "drive")}
    server = {scale: best_time(lambda: s.encode_flat(v, 0, 0, n), repeats) for scale, s in servers.items()}
    lay = c.layout(n).flat()
    scales = {k: best_time(lambda: k.mse_scales(v, lay, np.zeros(lay.n_blocks), np.zeros(lay.n_blocks, np.int64),
                                                 np.zeros(lay.n_blocks)), repeats if k is native else 1)
              for k in (native, reference)}
    return [
        {"what": "fo1bit encode / FWHT blocks of 2^16 (goal <= 3)", "ratio": encode / fwht_blocks,
         "a_ms": encode * 1e3, "b_ms": fwht_blocks * 1e3},
        {"what": "fo1bit encode / FWHT one row of 2^24", "ratio": encode / fwht_row, "a_ms": encode * 1e3,
         "b_ms": fwht_row * 1e3},
        *({"what": f"fo1bit encode, worker scale {scale} / eta", "ratio": worker[scale] / encode,
           "a_ms": worker[scale] * 1e3, "b_ms": encode * 1e3} for scale in worker),
        {"what": "aggregate 8 payloads / decode 1 (goal < 1)", "ratio": aggregate / decode,
         "a_ms": aggregate * 1e3, "b_ms": decode * 1e3},
        *({"what": f"server re-quantize, {scale} / eta", "ratio": server[scale] / server["eta"],
           "a_ms": server[scale] * 1e3, "b_ms": server["eta"] * 1e3} for scale in ("mse-debias", "drive")),
        {"what": "mse_scales native / numpy", "ratio": scales[native] / scales[reference],
         "a_ms": scales[native] * 1e3, "b_ms": scales[reference] * 1e3},
        *per_tensor_scales(repeats),
    ]


def per_tensor_scales(repeats):
    import torchvision

    sizes = tuple(p.numel() for p in torchvision.models.resnet50().parameters())
    d = sum(sizes)
    x = gradient(d, 2)
    times = {}
    for scale in ("tensor", "block"):
        c = compressors.get("scaled-sign", sign_scale=scale, tensor_sizes=sizes)
        payload = c.encode(x, 0, 1)
        rows = np.stack([c.encode(x, 0, r).buffer for r in range(8)])
        w = np.full(8, 1 / 8, dtype=np.float32)
        v = arrays.aligned_zeros(c.layout(d).padded)
        times[scale] = (best_time(lambda: c.encode(x, 0, 1, out=payload), repeats),
                        best_time(lambda: c.aggregate(rows, w, d, out=v), repeats))
    return [{"what": f"scaled-sign {what}, per tensor / per block (ResNet-50)", "ratio": times["tensor"][i] /
             times["block"][i], "a_ms": times["tensor"][i] * 1e3, "b_ms": times["block"][i] * 1e3}
            for i, what in enumerate(("encode", "aggregate 8"))]


def device_throughput(dev, d, repeats):
    """Records of the one-bit codec on torch tensors on `dev`, CUDA kernels and torch operations."""
    import torch

    from fobsgd_mpi import device, torch_codec as tc

    c = compressors.get("fo1bit")
    lay = c.layout(d)
    factors = c.lambda_factors(lay)
    x = torch.randn(d, device=dev)
    bits = torch.zeros(lay.n_words, dtype=torch.int64, device=dev)
    scales = torch.zeros(lay.n_blocks, device=dev)
    out = torch.empty(d, device=dev)
    v = torch.empty(lay.padded, device=dev)
    n_rows, nbytes = 8, lay.n_words * 8 + lay.n_blocks * 4
    rows = torch.zeros(n_rows, nbytes, dtype=torch.uint8, device=dev)
    copy_s = device.best_seconds(lambda: out.copy_(x), dev, repeats)
    copy_Bps = 8 * d / copy_s
    records = []
    for kernels in ("cuda", "torch") if dev.type == "cuda" else ("torch",):
        native.set_cuda_kernels(kernels == "cuda")
        for scheme, rotate in (("fo1bit", True), ("dithered-sign", False)):
            def encode():
                tc.encode_1bit(x, lay, rotate, tc.LAMBDA_MIN, factors, 0, 1, 1, bits, scales)

            encode()
            for r in range(n_rows):
                rows[r, : lay.n_words * 8] = bits.view(torch.uint8)
                rows[r, lay.n_words * 8 :] = scales.view(torch.uint8)
            times = {"encode": device.best_seconds(encode, dev, repeats),
                     "decode": device.best_seconds(lambda: tc.decode_1bit(bits, scales, lay, rotate, 0, 1, out), dev,
                                                   repeats),
                     "aggregate": device.best_seconds(lambda: tc.aggregate_1bit(rows, lay.n_words * 8,
                                                                                [1 / n_rows] * n_rows, lay, v),
                                                      dev, repeats)}
            moved = {"encode": 4 * d + d / 8, "decode": d / 8 + 4 * d, "aggregate": n_rows * d / 8 + 4 * lay.padded}
            rec = {"kernels": kernels, "scheme": scheme, "d": d, "copy_GBps": copy_Bps / 1e9}
            for what, t in times.items():
                rec[f"{what}_GBps"] = 4 * d / t / 1e9
                rec[f"{what}_of_bandwidth"] = moved[what] / t / copy_Bps
            records.append(rec)
    native.set_cuda_kernels(True)
    return records


def main_device(args):
    from fobsgd_mpi import device

    dev = device.use(args.device)
    records = [r for d in args.sizes for r in device_throughput(dev, d, args.repeats)]
    print(f"# python benchmarks/codec.py --device {args.device} --sizes {' '.join(map(str, args.sizes))}   "
          f"({device.name(dev)}; GB/s of fp32; bandwidth fraction = least bytes moved per second / a copy's)")
    columns = [("kernels", "kernels", "{}"), ("scheme", "scheme", "{}"), ("d", "d", "{:d}"),
               ("copy_GBps", "copy [GB/s]", "{:.1f}")]
    for what in ("encode", "decode", "aggregate"):
        columns += [(f"{what}_GBps", f"{what} [GB/s]", "{:.2f}"), (f"{what}_of_bandwidth", f"{what} / bw", "{:.3f}")]
    print(format_table(records, columns))
    path = results_path("codec-" + device.slug(dev), args.out)
    units = {k: "GB/s of fp32" for k in records[0] if k.endswith("_GBps")}
    units |= {k: "fraction of copy bandwidth" for k in records[0] if k.endswith("_of_bandwidth")}
    save_records(path, "throughput", records, units, meta={"device": device.name(dev), "aggregate_rows": 8})
    print(f"# wrote {path}")


def main(argv=None):
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=flag_type(INT, bounds=(1, 2**31)), nargs="+", default=[1_000_000, 25_000_000])
    p.add_argument("--repeats", type=flag_type(INT, bounds=(1, 10**6)), default=5)
    p.add_argument("--device", help="time torch tensors on this device (cuda, cuda:N; cpu as a dry run) instead")
    p.add_argument("--out", type=out_file, help="HDF5 file (default results/codec-<time>.h5)")
    args = p.parse_args(argv)
    if args.device:
        try:
            return main_device(args)
        except UsageError as exc:  # no such device here
            p.error(str(exc))
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
    path = results_path("codec", args.out)
    units = {"encode_GBps": "GB/s of fp32 input", "decode_GBps": "GB/s of fp32 output",
             "aggregate_GBps": "GB/s of fp32 output per payload", "bits_per_coord": "bit", "d": "coordinates"}
    save_records(path, "throughput", records, units, meta={"isa": native.isa(), "goals": ratios})
    print(f"# wrote {path}")


if __name__ == "__main__":
    main()
