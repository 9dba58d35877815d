import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg

from fobsgd_mpi import native, reference
from fobsgd_mpi.jobs import ROOT
from tests.benchmark_scripts import benchmark


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_equals_reference_every_size(isa, dtype, gen):
    for log_n in range(0, 23 if dtype == np.float32 else 21):
        x = gen.standard_normal((2, 1 << log_n)).astype(dtype)
        a, b = x.copy(), x.copy()
        native.fwht_(a)
        reference.fwht_(b)
        assert np.array_equal(a, b), f"{isa} {dtype.__name__} 2^{log_n}"


@pytest.mark.parametrize("normalize", [False, True])
def test_native_equals_reference_one_row_every_size(isa, normalize, gen):
    """One row of each size: the schedule table (native/src/fwht_plan.h) picks a kernel per size."""
    for log_n in range(0, 23):
        x = gen.standard_normal(1 << log_n).astype(np.float32)
        a, b = x.copy(), x.copy()
        native.fwht_(a, normalize=normalize)
        reference.fwht_(b, normalize=normalize)
        assert np.array_equal(a, b), f"{isa} 2^{log_n} normalize={normalize}"


# 2^23..2^26 on every instruction set but generic 2^26 (twice 2^25's time, on the strip shapes 2^25
# runs already). Every plan (native/src/fwht_plan.h) runs the stages above its tile in one strip
# group up to 2^26; several groups are covered by test_every_candidate_schedule_is_bit_exact.
LARGE = [(isa, log_n) for isa in native.supported_isas() or ["numpy"] for log_n in (23, 24, 25, 26)
         if (isa, log_n) != ("generic", 26)]


@pytest.mark.slow
@pytest.mark.parametrize("isa, log_n", LARGE, indirect=["isa"])
def test_native_equals_reference_up_to_2_26(isa, log_n, gen):
    x = gen.standard_normal(1 << log_n, dtype=np.float32)
    a = x.copy()
    native.fwht_(a)
    reference.fwht_(x)
    assert np.array_equal(a, x)


@pytest.mark.slow
@pytest.mark.parametrize("log_n", [21, 22, 23])
def test_native_equals_reference_float64_large(isa, log_n, gen):
    x = gen.standard_normal(1 << log_n)
    a = x.copy()
    native.fwht_(a)
    reference.fwht_(x)
    assert np.array_equal(a, x)


@pytest.mark.slow
def test_every_candidate_schedule_is_bit_exact():
    """Every schedule the tuner may write into the plan table (strips in one group and in several,
    each tile and radix), on every instruction set this CPU has, equals the plain stage loop bit for
    bit up to 2^20 (benchmarks/fwht_tune.cpp, compiled with setup.py's flags). 2^20 already takes
    strips in two groups (tiles of 2^10..2^13); 2^21 and 2^22 add no new shape but most of the
    check's time, and the table's own plans there run in the tests above."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fwht.py"), "--check-plans", "--max-log", "20"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(done.stdout.split()[::3]) == sorted(f"{isa}:" for isa in native.supported_isas())
    assert done.stdout.count(" 0 mismatches") == len(native.supported_isas())


@pytest.mark.parametrize("cpu, expected", [
    (("AuthenticAMD", 25, 17), ("AuthenticAMD", 25, 17)),  # its model's entry
    (("AuthenticAMD", 25, 99), ("AuthenticAMD", 25, -1)),  # else its family's
    (("GenuineIntel", 6, 85), ("AuthenticAMD", 26, -1)),  # else the first
])
def test_plan_entry_rule(cpu, expected):
    bench = benchmark("fwht")
    entries = [{"cpu": c} for c in (("AuthenticAMD", 26, -1), ("AuthenticAMD", 25, -1), ("AuthenticAMD", 25, 17))]
    assert bench.entry_for(entries, cpu)["cpu"] == expected


def test_a_plan_may_hand_a_size_down():
    bench = benchmark("fwht")
    cpu = ("AuthenticAMD", 25, 17)
    own, down = (4, 4, 12, 17, 4, 1), (3, 3, 13, 17, 4, 0)
    plans = {"avx512": [{"cpu": cpu, "f32": [own] * 31}], "avx2": [{"cpu": cpu, "f32": [down] * 31}]}
    assert bench.running_plan(plans, "avx512", cpu, 18) == ("avx2", down)
    assert bench.running_plan(plans, "avx2", cpu, 18) == ("avx2", down)


@pytest.mark.skipif(not native.available(), reason="the native extension is not built")
def test_kernels_run_this_cpus_plans(isa):
    """The plan and kernel that run each size here are the ones benchmarks/fwht.py's reading of
    native/src/fwht_plan.h picks for this CPU (CPUID's family and model, and the hand-down to a
    narrower instruction set, by the same rules), at every size and dtype: the tuner's writer, its
    reader and the kernels' choice agree."""
    bench = benchmark("fwht")
    plans, cpu = bench.read_plans(), bench.this_cpu()
    for log_n in range(31):
        for dtype, key in ((np.float32, "f32"), (np.float64, "f64")):
            runs, plan = bench.running_plan(plans, isa, cpu, log_n, key)
            family, model = bench.entry_for(plans[runs], cpu)["cpu"][1:]
            assert native.fwht_plan(log_n, dtype) == (plan[:5], runs, family, model), f"{isa} 2^{log_n} {key}"


@pytest.mark.skipif(not native.available(), reason="the native extension is not built")
@pytest.mark.parametrize("log_n", [-1, 31])
def test_plan_of_a_size_out_of_range_is_a_value_error(log_n):
    with pytest.raises(ValueError, match="log_n outside 0..30"):
        native.fwht_plan(log_n)


@pytest.mark.parametrize("log_n", [1, 2, 3, 5, 8])
def test_matches_scipy_hadamard(isa, log_n):
    n = 1 << log_n
    x = np.eye(n)
    native.fwht_(x, normalize=False)
    assert np.array_equal(x, scipy.linalg.hadamard(n))  # rows of H, symmetric


@pytest.mark.parametrize("log_n", [4, 10, 16, 20])
def test_orthonormal_and_involution(isa, log_n, gen):
    x = gen.standard_normal(1 << log_n)
    y = x.copy()
    native.fwht_(y)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    native.fwht_(y)
    np.testing.assert_allclose(y, x, atol=1e-12)


def test_unnormalized_scale(gen):
    x = gen.standard_normal(1 << 12).astype(np.float32)
    a = x.copy()
    native.fwht_(a, normalize=False)
    native.fwht_(a, normalize=False)
    np.testing.assert_allclose(a, x * (1 << 12), rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(6, dtype=np.float32), "power-of-two"),
        (np.zeros(8, dtype=np.int32), "float32 or float64"),
        (np.zeros(8, dtype=np.float16), "float32 or float64"),
        (np.zeros((8, 8), dtype=np.float32)[:, ::2], "C-contiguous"),
        (np.zeros(0, dtype=np.float32), "power-of-two"),
        ([1.0, 2.0], "numpy array"),
    ],
)
def test_bad_input_is_a_clear_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        native.fwht_(bad)


def test_read_only_array_rejected():
    x = np.zeros(8, dtype=np.float32)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        native.fwht_(x)


def test_batched_rows_are_independent(gen):
    x = gen.standard_normal((5, 3, 256)).astype(np.float32)
    y = x.copy()
    native.fwht_(y)
    for i in range(5):
        for j in range(3):
            r = x[i, j].copy()
            reference.fwht_(r)
            assert np.array_equal(y[i, j], r)
