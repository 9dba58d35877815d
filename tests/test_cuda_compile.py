"""The CUDA kernels must always compile (running them needs a GPU machine)."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc") or next((str(p) for p in pathlib.Path("/usr/local").glob("cuda*/bin/nvcc")), None)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", sorted(p.name for p in (ROOT / "native" / "cuda").glob("*.cu")))
def test_cuda_source_compiles(source, tmp_path):
    cmd = [NVCC, "-std=c++17", "-O3", "-arch=sm_90", "-fmad=false", "--extended-lambda", "-Werror=all-warnings",
           "-c", str(ROOT / "native" / "cuda" / source), "-o", str(tmp_path / "out.o")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
