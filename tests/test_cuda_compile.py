"""The CUDA kernels always compile where nvcc exists, and the optional extension fobsgd_mpi._native_cuda
is built and imports (without a GPU: importing launches nothing). Running them needs a GPU: the
equality tests in test_torch_codec.py (test_gpu_*)."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA_HOME = next((p for p in [os.environ.get("CUDA_HOME"), "/usr/local/cuda", *sorted(map(str, pathlib.Path("/usr/local").glob("cuda-*")))]
                  if p and (pathlib.Path(p) / "bin" / "nvcc").exists()), None)
NVCC = str(pathlib.Path(CUDA_HOME) / "bin" / "nvcc") if CUDA_HOME else None


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", sorted(p.name for p in (ROOT / "native" / "cuda").glob("*.cu")))
def test_cuda_source_compiles(source, tmp_path):
    cmd = [NVCC, "-std=c++17", "-O3", "-arch=sm_90", "-fmad=false", "--extended-lambda", "-Werror=all-warnings",
           "-c", str(ROOT / "native" / "cuda" / source), "-o", str(tmp_path / "out.o")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.skipif(os.environ.get("FOBSGD_CUDA") == "0", reason="FOBSGD_CUDA=0 skips the CUDA extension")
def test_cuda_extension_built_and_imports():
    torch = pytest.importorskip("torch")
    if not torch.version.cuda:
        pytest.skip(f"torch {torch.__version__} is not a CUDA build")
    from fobsgd_mpi import native

    ext = native.cuda_extension()
    assert ext is not None, "fobsgd_mpi._native_cuda is not built: run `make install` (setup.py printed why)"
    for name in ("fwht_f32", "encode_1bit", "decode_1bit", "aggregate_1bit"):
        assert callable(getattr(ext, name))
    assert ext.error_string(0) == "no error"
