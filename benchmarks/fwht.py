"""Native FWHT against fht-cpu, FFHT (ffht-unofficial), torch, numpy and a plain copy.

float32, in place, unnormalised, single thread, best of N with the contenders interleaved call by
call (so machine noise hits them alike); every contender timed in this run.
Prints the table and the ratios, writes results/fwht-<time>.h5 and .png.

    python benchmarks/fwht.py [--min-log 10] [--max-log 24] [--repeats 30]

Timing is thread CPU time (time.thread_time): on a shared, loaded machine wall-clock times of a
millisecond and up mostly measure the scheduler.

    python benchmarks/fwht.py --tune [--max-log 24]

instead times the FWHT schedules of native/src/fwht.inl per log2 n for every instruction set this
CPU has (benchmarks/fwht_tune.cpp, compiled with setup.py's flags for that set) after checking
every schedule bit for bit against the plain stage loop, and rewrites native/src/fwht_plan.h, the
table the kernels dispatch on: this CPU model's entry for each instruction set it measured (added
if new), each size handed to the next narrower instruction set's kernel where that one ran 3 %
faster here; other CPUs' entries, and instruction sets this CPU lacks or --isas leaves out, are
kept. --check-plans [--max-log 22] only runs that check.

    python benchmarks/fwht.py --device cuda [--min-log 10] [--max-log 15] [--elements 24]

instead times torch tensors on that device (cpu runs the same code, as a dry run): our CUDA kernel
(fobsgd_mpi._native_cuda), the torch codec's stages, fast-hadamard-transform (Dao-AILab) and
hadamard-transform (pure torch) where installed, on rows of 2^min-log .. 2^max-log batched to
2^elements floats, against a device-to-device copy of the same array: wall-clock per call with the
device synchronized, GB/s of float32 read and written, and the fraction of the copy's GB/s.
"""
import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for every contender (thread CPU time)

import numpy as np  # noqa: E402

from fobsgd_mpi import arrays, native, reference  # noqa: E402
from fobsgd_mpi.benchmarking import format_table, line_plot, out_file, results_path, save_records  # noqa: E402
from fobsgd_mpi.config import INT, ScriptParser, flag_type  # noqa: E402
from fobsgd_mpi.errors import UsageError  # noqa: E402


def contenders():
    """name -> (prepare, transform); prepare runs untimed before the contender's timings."""
    out = {}
    for isa in native.supported_isas():
        out[f"native-{isa}"] = (lambda isa=isa: native.set_isa(isa), lambda x: native.fwht_(x, normalize=False))
    try:
        import fht_cpu

        out["fht-cpu"] = (None, fht_cpu.fht_1d_f32)
    except ImportError:
        print("# fht-cpu not installed (make bench-deps); skipped", file=sys.stderr)
    try:
        import ffht

        out["ffht"] = (None, ffht.fht)
    except ImportError:
        print("# ffht-unofficial not installed (make bench-deps); skipped", file=sys.stderr)
    try:
        import torch

        torch.set_num_threads(1)

        def torch_fwht(x):
            t = torch.from_numpy(x)
            h, n = 1, x.shape[-1]
            while h < n:
                v = t.view(-1, 2, h)
                a, b = v[:, 0].clone(), v[:, 1]
                v[:, 0] += b
                torch.sub(a, b, out=b)
                h *= 2
            return x

        out["torch"] = (None, torch_fwht)
    except ImportError:
        pass
    out["numpy"] = (None, lambda x: reference.fwht_(x, normalize=False))
    return out


def cpu_times_interleaved(fns, repeats):
    """Best thread-CPU seconds per named fn(), interleaved round by round; each timed call follows an
    untimed one of the same fn. fns: name -> (prepare or None, fn). Short calls are looped."""
    best = dict.fromkeys(fns, float("inf"))
    loops = {}
    for name, (prepare, fn) in fns.items():
        if prepare:
            prepare()
        fn()  # the first call may fault pages in: size the loop on the fastest of a few
        one = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            one = min(one, time.perf_counter() - t0)
        loops[name] = max(1, min(1000, int(2e-4 / max(one, 1e-9))))
    for _ in range(repeats):
        for name, (prepare, fn) in fns.items():
            if prepare:
                prepare()
            fn()
            t0 = time.thread_time()
            for _ in range(loops[name]):
                fn()
            best[name] = min(best[name], (time.thread_time() - t0) / loops[name])
    return best


def run(min_log, max_log, repeats):
    records = []
    for log_n in range(min_log, max_log + 1):
        x = arrays.aligned_zeros(1 << log_n)  # every contender transforms this one 64-byte-aligned array
        x[:] = np.random.default_rng(log_n).standard_normal(1 << log_n)
        y = arrays.aligned_zeros(1 << log_n)
        slow = log_n > 20  # numpy and torch take up to a second a call there
        fns = {"copy": (None, lambda: np.copyto(y, x))}
        fns.update({name: (prepare, lambda fn=fn: fn(x)) for name, (prepare, fn) in contenders().items()
                    if not (slow and name in ("numpy", "torch"))})
        times = cpu_times_interleaved(fns, repeats if log_n < 20 else max(5, repeats >> (log_n - 19)))
        if slow:
            times.update(cpu_times_interleaved({name: (None, lambda fn=fn: fn(x)) for name, (_, fn) in contenders().items()
                                                if name in ("numpy", "torch")}, 2))
        rec = {"log_n": log_n, **{f"{name}_s": t for name, t in times.items()}}
        native.set_isa(None)
        ours = rec[f"native-{native.isa()}_s"]  # what dispatch runs on this CPU
        peers = [rec[k] for k in ("fht-cpu_s", "ffht_s") if k in rec]
        rec["speedup_vs_fht-cpu"] = rec["fht-cpu_s"] / ours if "fht-cpu_s" in rec else None
        rec["speedup_vs_ffht"] = rec["ffht_s"] / ours if "ffht_s" in rec else None
        rec["speedup_vs_best_peer"] = min(peers) / ours if peers else None
        rec["native_over_copy"] = ours / rec["copy_s"]
        records.append(rec)
    return records


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAN_H = os.path.join(ROOT, "native", "src", "fwht_plan.h")
# setup.py's per-instruction-set flags and FOBSGD_VBYTES of isa_*.cpp
TUNE_FLAGS = {"generic": (16, []), "avx2": (32, ["-mavx2", "-mfma"]),
              "avx512": (64, ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"])}
COMMON = ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", "-Wno-psabi",
          "-DFOBSGD_X86_ISAS=1", "-Inative/include", "-Inative/src"]
FIELDS = ("r0", "radix", "c1", "tile", "strip", "narrower")
NARROWER = {"avx512": "avx2", "avx2": "generic"}  # the kernel a plan may hand a size to (fwht.inl)


def read_plans():
    """isa -> [entry], each {"cpu": (vendor, family, model), "comment", "f32": plans[31], "f64": plans[31]},
    from fwht_plan.h."""
    text = open(PLAN_H).read()
    out = {}
    block = r"^#(?:(?:el)?if FOBSGD_VBYTES == \d+|else) +// (\w+)\n(.*?)(?=^#)"
    entry = r'^    \{"(\w*)", (-?\d+), (-?\d+), +// (.*?)\n(.*?)^    \}\},'
    for m in re.finditer(block, text, re.S | re.M):
        isa, body = m.groups()
        out[isa] = []
        for e in re.finditer(entry, body, re.S | re.M):
            vendor, family, model, comment, rows = e.groups()
            plans = [tuple(map(int, r)) for r in re.findall(r"\{(-?\d+), (-?\d+), (-?\d+), (-?\d+), (-?\d+), (-?\d+)\}",
                                                            rows)]
            out[isa].append({"cpu": (vendor, int(family), int(model)), "comment": comment,
                             "f32": plans[:31], "f64": plans[31:62]})
    return out


def write_plans(plans, header):
    lines = [f"// {line}" for line in header] + [
        "// FWHT schedules per (instruction set, CPU, dtype, log2 n): {r0, radix, c1, tile, strip, narrower},",
        "// see fwht.inl.",
        "// Each CPU entry: CPUID vendor, family, model (-1: any model of the family). A CPU takes its",
        "// model's entry, else its family's, else the first. Written by python benchmarks/fwht.py --tune;",
        "// do not edit by hand."]
    for i, isa in enumerate(("avx512", "avx2", "generic")):
        vbytes = TUNE_FLAGS[isa][0]
        lines.append(f"#if FOBSGD_VBYTES == {vbytes}  // {isa}" if i == 0 else
                     f"#elif FOBSGD_VBYTES == {vbytes}  // {isa}" if isa != "generic" else f"#else  // {isa}")
        lines.append("static const FwhtPlans kFwhtPlans[] = {")
        for e in plans[isa]:
            vendor, family, model = e["cpu"]
            lines.append(f'    {{"{vendor}", {family}, {model},  // {e["comment"]}')
            lines.append("     {")
            for name, table in (("float32", e["f32"]), ("float64", e["f64"])):
                lines.append(f"      {{  // {name}, log2 n = 0..30")
                for k in range(0, 31, 8):
                    lines.append("        " + " ".join("{%d, %d, %d, %d, %d, %d}," % p for p in table[k:k + 8]))
                lines.append("      },")
            lines.append("    }},")
        lines.append("};")
    lines.append("#endif")
    open(PLAN_H, "w").write("\n".join(lines) + "\n")


def this_cpu():
    """(vendor, family, model) as CPUID reports them (Linux /proc/cpuinfo); ("", -1, -1) elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        return info["vendor_id"], int(info["cpu family"]), int(info["model"])
    except (OSError, KeyError, ValueError):
        return "", -1, -1


def entry_for(entries, cpu):
    """The entry fwht.inl's cpu_plans() picks for `cpu` (same rule)."""
    vendor, family, model = cpu
    mine = [e for e in entries if e["cpu"][:2] == (vendor, family)]
    return next((e for e in mine if e["cpu"][2] == model), next((e for e in mine if e["cpu"][2] < 0), entries[0]))


def checked_tuner(isa, tmp, max_log):
    """benchmarks/fwht_tune.cpp compiled for `isa` in `tmp`, after it found every candidate schedule
    up to 2^max_log (float32; float64 two sizes less) bit-identical to the plain stage loop."""
    vbytes, flags = TUNE_FLAGS[isa]
    exe = os.path.join(tmp, f"fwht_tune_{isa}")
    subprocess.run(["g++", *COMMON, *flags, f"-DFOBSGD_VBYTES={vbytes}", f'-DFOBSGD_ISA_NAME="{isa}"',
                    "benchmarks/fwht_tune.cpp", "-o", exe], cwd=ROOT, check=True)
    check = subprocess.run([exe, "check", str(max_log)], capture_output=True, text=True)
    print(check.stdout.strip(), flush=True)
    if check.returncode:
        raise SystemExit(f"{isa}: a schedule differs from the stage loop")
    return exe


def check_plans(max_log, isas):
    with tempfile.TemporaryDirectory() as tmp:
        for isa in isas:
            checked_tuner(isa, tmp, max_log)


def running_plan(plans, isa, cpu, log_n, dtype="f32"):
    """(instruction set, plan) that runs rows of 2^log_n under `isa` on `cpu` (fwht.inl's fwht_row)."""
    plan = entry_for(plans[isa], cpu)[dtype][log_n]
    return running_plan(plans, NARROWER[isa], cpu, log_n, dtype) if plan[5] else (isa, plan)


def head_to_head(wide, narrow, log_n, reps, rounds=5):
    """Best ns of each (exe, plan) on 2^log_n, the two tuner processes alternating `rounds` times."""
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, (exe, plan) in enumerate((wide, narrow)):
            out = subprocess.run([exe, "time", str(log_n), str(reps), *map(str, plan[:5])], capture_output=True,
                                 text=True, check=True).stdout
            best[i] = min(best[i], float(out.split()[0]))
    return best


def tune_repeats(log_n, repeats):
    return max(5, min(repeats, repeats >> max(0, log_n - 16)))


def float_lanes_log2(isa):
    """log2 W: float32 lanes of the instruction set's vectors."""
    return (TUNE_FLAGS[isa][0] // 4).bit_length() - 1


def lowest_tuned(isa, min_log):
    """Below 2^(log2 W + 5) a row fits in registers and takes no plan."""
    return max(min_log, float_lanes_log2(isa) + 5)


def tuned_entry(exe, isa, cpu, old, min_log, max_log, repeats):
    """This CPU's entry for `isa`: per size the fastest schedule the tuner finds; sizes below the measured
    range keep the plans this CPU runs now (`old`), those above take the largest measured."""
    lo, found = lowest_tuned(isa, min_log), {}
    for log_n in range(lo, max_log + 1):
        out = subprocess.run([exe, "tune", str(log_n), str(log_n), str(tune_repeats(log_n, repeats))],
                             capture_output=True, text=True, check=True).stdout.split()
        found[log_n] = tuple(map(int, out[2:7])) + (0,)
        print(f"{isa} 2^{log_n}: plan {dict(zip(FIELDS, found[log_n][:5]))}  {float(out[7]):.0f} ns "
              f"(previous table {float(out[8]):.0f} ns)", flush=True)
    return {"cpu": cpu, "f32": [found[k] if k in found else old[k] if k < lo else found[max_log] for k in range(31)],
            "comment": f"float32 measured {datetime.date.today().isoformat()} on {cpu_name()} for log2 n "
                       f"{lo}..{max_log} (beyond: the largest measured); float64 = float32's plan for the same bytes, "
                       "not measured"}


def hand_down(mine, isa, exes, theirs, min_log, max_log, repeats):
    """Marks the sizes of `mine` (this CPU's entry for `isa`) that the next narrower instruction set's
    kernel runs faster, by 3 % with the two tuner processes alternating, unless its own plan (`theirs`)
    hands the size down again."""
    narrow = NARROWER[isa]
    for log_n in range(lowest_tuned(isa, min_log), max_log + 1):
        if theirs[log_n][5]:
            continue
        t_wide, t_narrow = head_to_head((exes[isa], mine[log_n]), (exes[narrow], theirs[log_n]), log_n,
                                        tune_repeats(log_n, repeats))
        down = t_narrow < 0.97 * t_wide
        mine[log_n] = mine[log_n][:5] + (int(down),)
        print(f"{isa} 2^{log_n}: {t_wide:.0f} ns, {narrow} {t_narrow:.0f} ns: runs {narrow if down else isa}",
              flush=True)
    mine[max_log + 1:] = [mine[max_log]] * (30 - max_log)


def tune(min_log, max_log, repeats, isas):
    plans, cpu = read_plans(), this_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        exes = {isa: checked_tuner(isa, tmp, min(max_log, 22)) for isa in isas}
        for isa in isas:
            mine = tuned_entry(exes[isa], isa, cpu, entry_for(plans[isa], cpu)["f32"], min_log, max_log, repeats)
            ours = [e["cpu"] == cpu for e in plans[isa]]
            plans[isa] = [mine if o else e for o, e in zip(ours, plans[isa])] + ([] if any(ours) else [mine])
        for isa in sorted(isas, key=lambda isa: TUNE_FLAGS[isa][0]):  # narrowest first: its hand-downs are final
            mine, narrow = next(e for e in plans[isa] if e["cpu"] == cpu), NARROWER.get(isa)
            if narrow in native.supported_isas():
                if narrow not in exes:
                    exes[narrow] = checked_tuner(narrow, tmp, min(max_log, 22))
                hand_down(mine["f32"], isa, exes, entry_for(plans[narrow], cpu)["f32"], min_log, max_log, repeats)
            # float64: float32's plan for the same bytes (one more element per byte: log2 n + 1), unmeasured
            lw = float_lanes_log2(isa)
            mine["f64"] = [(p[0], p[1], p[2] - 1, p[3] - 1, max(p[4] - 1, lw - 1), p[5])
                           for p in mine["f32"][1:] + mine["f32"][-1:]]
    write_plans(plans, [f"last: python benchmarks/fwht.py --tune --min-log {min_log} --max-log {max_log} "
                        f"--repeats {repeats} --isas {' '.join(isas)} on {cpu_name()} {cpu}"])
    print(f"# wrote {PLAN_H}; rebuild: python setup.py build_ext --inplace")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cpus"


def plot(records, path):
    logs = [r["log_n"] for r in records]
    line_plot({k[:-2]: (logs, [r[k] * 1e3 for r in records]) for k in records[0] if k.endswith("_s")}, path,
              "length [log2 of float32 elements]", "time per transform, best of N [ms]", "in-place FWHT, one thread")


def device_contenders():
    """name -> fn(x) -> transformed x (in place or not, unnormalised where the peer allows) on torch
    tensors of any device; the peers only where installed (fast-hadamard-transform: CUDA only)."""
    import torch

    from fobsgd_mpi import torch_codec

    def ours(x):
        return torch_codec.fwht_(x, normalize=False)

    def torch_stages(x):
        native.set_cuda_kernels(False)
        try:
            return torch_codec.fwht_(x, normalize=False)
        finally:
            native.set_cuda_kernels(True)

    out = {"ours": ours, "torch-codec": torch_stages}
    try:
        from fast_hadamard_transform import hadamard_transform as dao

        out["fast-hadamard-transform"] = lambda x: dao(x, 1.0)
    except ImportError:
        print("# fast-hadamard-transform not installed; skipped", file=sys.stderr)
    try:
        from hadamard_transform import hadamard_transform as pure

        out["hadamard-transform"] = pure
    except ImportError:
        print("# hadamard-transform not installed; skipped", file=sys.stderr)
    return out, torch


def run_device(spec, min_log, max_log, log_elements, repeats):
    """One record per row length: seconds per call of each contender and of a copy, on `spec`."""
    from fobsgd_mpi import device

    fns, torch = device_contenders()
    dev = device.use(spec)
    n = 1 << log_elements
    x = torch.randn(n, device=dev) / 2**12  # repeated unnormalised transforms stay finite for a while
    y = torch.empty_like(x)
    records = []
    for log_n in range(min_log, max_log + 1):
        rows = x.view(-1, 1 << log_n)
        rec = {"log_n": log_n, "elements": n, "copy_s": device.best_seconds(lambda: y.copy_(x), dev, repeats)}
        for name, fn in fns.items():
            if name == "fast-hadamard-transform" and (dev.type != "cuda" or log_n > 15):
                continue
            try:
                rec[f"{name}_s"] = device.best_seconds(lambda fn=fn: fn(rows), dev, repeats)
            except (RuntimeError, ValueError, AssertionError) as exc:
                print(f"# {name} at 2^{log_n}: {str(exc).splitlines()[0]}", file=sys.stderr)
        for name in fns:
            if f"{name}_s" in rec:
                rec[f"{name}_GBps"] = 8 * n / rec[f"{name}_s"] / 1e9
                rec[f"{name}_of_copy"] = rec["copy_s"] / rec[f"{name}_s"]
        records.append(rec)
    return records, dev, list(fns)


def main_device(args):
    from fobsgd_mpi import device

    records, dev, names = run_device(args.device, args.min_log, args.max_log, args.elements, args.repeats)
    name = device.name(dev)
    columns = [("log_n", "log2 row", "{:d}"), ("copy_s", "copy [ms]", "{:.4f}")]
    scaled = [{**r, "copy_s": r["copy_s"] * 1e3, **{f"{k}_s": r[f"{k}_s"] * 1e3 for k in names if f"{k}_s" in r}}
              for r in records]
    for k in names:
        columns += [(f"{k}_s", f"{k} [ms]", "{:.4f}"), (f"{k}_GBps", f"{k} [GB/s]", "{:.1f}"),
                    (f"{k}_of_copy", f"{k} / copy bandwidth", "{:.2f}")]
    print(f"# python benchmarks/fwht.py --device {args.device} --min-log {args.min_log} --max-log {args.max_log} "
          f"--elements {args.elements}   ({datetime.date.today().isoformat()}, {name}; float32, unnormalised, "
          f"rows batched to 2^{args.elements} floats; GB/s of float32 read + written; best of {args.repeats})")
    print(format_table(scaled, columns))
    path = results_path("fwht-" + device.slug(dev), args.out)
    units = {k: "s" for k in records[0] if k.endswith("_s")}
    units |= {f"{k}_GBps": "GB/s (read + write)" for k in names} | {f"{k}_of_copy": "ratio" for k in names}
    save_records(path, "fwht", records, units, meta={"dtype": "float32", "device": name, "repeats": args.repeats})
    print(f"# wrote {path}")


def main(argv=None):
    p = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-log", type=flag_type(INT, bounds=(1, 30)), default=10)
    p.add_argument("--max-log", type=flag_type(INT, bounds=(1, 30)), default=24)
    p.add_argument("--repeats", type=flag_type(INT, bounds=(1, 10**6)), default=100)
    p.add_argument("--tune", action="store_true", help="measure the schedules and rewrite native/src/fwht_plan.h")
    p.add_argument("--check-plans", action="store_true",
                   help="only check every candidate schedule up to 2^max-log bit for bit against the stage loop")
    p.add_argument("--isas", nargs="+", choices=native.supported_isas(), default=native.supported_isas(),
                   help="with --tune or --check-plans: the instruction sets (--tune keeps the others' plans)")
    p.add_argument("--device", help="time torch tensors on this device (cuda, cuda:N; cpu as a dry run) instead")
    p.add_argument("--elements", type=flag_type(INT, bounds=(1, 31)), default=24,
                   help="with --device: log2 of the floats per call")
    p.add_argument("--out", type=out_file, help="HDF5 file (default results/fwht-<time>.h5)")
    args = p.parse_args(argv)
    if args.min_log > args.max_log:
        p.error(f"--min-log {args.min_log} is above --max-log {args.max_log}")
    if args.device:
        try:
            return main_device(args)
        except UsageError as exc:  # no such device here
            p.error(str(exc))
    if args.check_plans:
        return check_plans(args.max_log, args.isas)
    if args.tune:
        return tune(args.min_log, args.max_log, args.repeats, args.isas)
    with np.errstate(all="ignore"):  # repeated unnormalised transforms overflow to inf; timing is unaffected
        records = run(args.min_log, args.max_log, args.repeats)
    timing_keys = [k for k in records[0] if k.endswith("_s")]
    columns = [("log_n", "log2 n", "{:d}")] + [(k, f"{k[:-2]} [ms]", "{:.4f}") for k in timing_keys]
    scaled = [{**r, **{k: r[k] * 1e3 for k in timing_keys}} for r in records]
    ratios = [("speedup_vs_fht-cpu", "fht-cpu / native"), ("speedup_vs_ffht", "ffht / native"),
              ("speedup_vs_best_peer", "best peer / native"), ("native_over_copy", "native / copy")]
    columns += [(k, f"{h} [x]", "{:.2f}") for k, h in ratios]
    print(f"# python benchmarks/fwht.py --min-log {args.min_log} --max-log {args.max_log} --repeats {args.repeats}"
          f"   ({datetime.date.today().isoformat()}, {cpu_name()}; ISAs: {', '.join(native.supported_isas())};"
          f" native = dispatch's choice, {native.isa()}; float32, in place, unnormalised, one thread, best thread"
          " CPU time of N interleaved)")
    print(format_table(scaled, columns))
    path = results_path("fwht", args.out)
    units = {k: "s" for k in timing_keys} | {k: "ratio" for k, _ in ratios}
    save_records(path, "fwht", records, units, meta={"dtype": "float32", "threads": 1, "repeats": args.repeats})
    plot(records, os.path.splitext(path)[0] + ".png")
    print(f"# wrote {path} and .png")


if __name__ == "__main__":
    main()
