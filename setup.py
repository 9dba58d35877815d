"""Build of fobsgd_mpi and its extension fobsgd_mpi._native (native/).

The kernels in native/src/kernels.inl are compiled once per instruction set, each translation
unit with its own flags, and picked at run time (native/src/dispatch.cpp) - never -march=native,
so one build runs on every node of a mixed cluster.

fobsgd_mpi._native_cuda (native/cuda/) is optional: built when nvcc is found and torch is a CUDA
build, skipped with FOBSGD_CUDA=0, and a failure only warns (the CPU extension never needs CUDA).
FOBSGD_CUDA_ARCH picks the GPU architectures (default "80;90": A100, H100/H200, and PTX for newer).
"""
import glob
import os
import platform
import re
import shutil
import subprocess

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

X86 = platform.machine().lower() in ("x86_64", "amd64", "i686")
ISA_FLAGS = {"generic": []}
if X86:
    ISA_FLAGS["avx2"] = ["-mavx2", "-mfma"]
    ISA_FLAGS["avx512"] = ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"]
# Bit-exact agreement with the numpy reference needs IEEE arithmetic as written: no contraction
# into FMA, no fast-math. OpenMP parallelises over blocks when n_threads > 1.
COMMON_FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", "-Wall", "-Wno-psabi"]
DEFINES = [("FOBSGD_X86_ISAS", "1")] if X86 else []


CUDA_SOURCES = sorted(glob.glob("native/cuda/*.cu"))


def cuda_home():
    """The CUDA toolkit: CUDA_HOME / CUDA_PATH, nvcc's on PATH, /usr/local/cuda(-*); the first with
    both bin/nvcc and include/cuda_runtime.h (a PATH nvcc can be a wrapper script elsewhere), or None."""
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                  os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None,
                  "/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    return next((c for c in candidates if c and os.access(os.path.join(c, "bin", "nvcc"), os.X_OK)
                 and os.path.exists(os.path.join(c, "include", "cuda_runtime.h"))), None)


def cuda_skip_reason():
    """Why fobsgd_mpi._native_cuda is not built, or None."""
    if os.environ.get("FOBSGD_CUDA", "1") == "0":
        return "FOBSGD_CUDA=0"
    try:
        import torch
    except ImportError:
        return "torch is not importable at build time (install with --no-build-isolation)"
    if not torch.version.cuda:
        return f"torch {torch.__version__} is not a CUDA build"
    if cuda_home() is None:
        return "no CUDA toolkit with nvcc found (set CUDA_HOME)"
    return None


def gencode_flags():
    """-gencode per architecture of FOBSGD_CUDA_ARCH ("80;90"), plus PTX of the newest for later GPUs."""
    archs = [a.strip() for a in os.environ.get("FOBSGD_CUDA_ARCH", "80;90").replace(",", ";").split(";") if a.strip()]
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    return flags + [f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}"]


class BuildPerISA(build_ext):
    """Compiles native/src/isa_<name>.cpp with that instruction set's flags, then links all; the
    CUDA extension's .cu files go through nvcc, and its failure leaves the package without it."""

    def build_extension(self, ext):
        if ext.name == "fobsgd_mpi._native_cuda":
            return self.build_cuda(ext)
        objects = []
        for isa, flags in ISA_FLAGS.items():
            objects += self.compiler.compile(
                [f"native/src/isa_{isa}.cpp"],
                output_dir=self.build_temp,
                include_dirs=ext.include_dirs,
                macros=DEFINES,
                extra_postargs=["-std=c++17", "-fPIC", *COMMON_FLAGS, *flags],
            )
        ext.extra_objects = objects
        super().build_extension(ext)

    def build_cuda(self, ext):
        reason = cuda_skip_reason()
        if reason:
            print(f"fobsgd_mpi._native_cuda not built: {reason}")
            self.extensions.remove(ext)  # nothing to copy or install (it is the last extension: the loop ends)
            return
        home = cuda_home()
        nvcc = os.path.join(home, "bin", "nvcc")
        try:
            os.makedirs(self.build_temp, exist_ok=True)
            objects = []
            for source in CUDA_SOURCES:
                obj = os.path.join(self.build_temp, os.path.basename(source) + ".o")
                subprocess.run([nvcc, "-std=c++17", "-O3", "-fmad=false", "--extended-lambda", "-Xcompiler", "-fPIC",
                                *gencode_flags(), "-c", source, "-o", obj], check=True)
                objects.append(obj)
            ext.extra_objects = objects
            ext.include_dirs = [*ext.include_dirs, os.path.join(home, "include")]
            lib = next(p for p in (os.path.join(home, d) for d in ("lib64", "lib")) if os.path.isdir(p))
            ext.library_dirs = [lib]
            ext.runtime_library_dirs = [lib]  # torch loads its own libcudart.so first; this is the fallback
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the CPU package working
            print(f"WARNING: fobsgd_mpi._native_cuda failed to build ({exc}); GPU tensors use the torch codec")
            self.extensions.remove(ext)


native = Pybind11Extension(
    "fobsgd_mpi._native",
    ["native/src/bindings.cpp", "native/src/dispatch.cpp"],
    depends=sorted(glob.glob("native/src/*") + glob.glob("native/include/*")),  # rebuild when a kernel changes
    include_dirs=["native/include", "native/src"],
    define_macros=DEFINES,
    cxx_std=17,
    extra_compile_args=COMMON_FLAGS,
    extra_link_args=["-fopenmp"],
)

native_cuda = Pybind11Extension(
    "fobsgd_mpi._native_cuda",
    ["native/cuda/bindings.cpp"],
    depends=CUDA_SOURCES + ["native/cuda/fobsgd_cuda.h", "native/src/stream.inl", "native/include/fobsgd.h"],
    include_dirs=["native/cuda"],
    cxx_std=17,
    libraries=["cudart"],
)

here = os.path.dirname(os.path.abspath(__file__))
version = re.search(r'__version__ = "([^"]+)"', open(os.path.join(here, "fobsgd_mpi", "__init__.py")).read()).group(1)
setup(
    name="fobsgd_mpi",
    version=version,
    description="MPI harness and benchmark for communication-compressed distributed SGD (FO-SGD, LIEC-SGD)",
    long_description=open(os.path.join(here, "README.md")).read() if os.path.exists(os.path.join(here, "README.md")) else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fobsgd_mpi", "fobsgd_mpi.*"]),
    package_data={"fobsgd_mpi": ["job_templates/*.in"]},  # sweep.py's SLURM / PBS templates
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "h5py>=3.8",
        "mpi4py>=4.0",
        "torch>=2.1",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "mnist1d>=0.0.2",
    ],
    extras_require={
        "test": ["pytest>=8", "scipy>=1.10"],
        "bench": ["fht-cpu==1.0.1"],
    },
    ext_modules=[native, native_cuda],
    cmdclass={"build_ext": BuildPerISA},
    zip_safe=False,
)
