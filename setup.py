"""Build of fobsgd_mpi and its extension fobsgd_mpi._native (native/).

The kernels in native/src/kernels.inl are compiled once per instruction set, each translation
unit with its own flags, and picked at run time (native/src/dispatch.cpp) - never -march=native,
so one build runs on every node of a mixed cluster.
"""
import glob
import os
import platform
import re

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


class BuildPerISA(build_ext):
    """Compiles native/src/isa_<name>.cpp with that instruction set's flags, then links all."""

    def build_extension(self, ext):
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
    ext_modules=[native],
    cmdclass={"build_ext": BuildPerISA},
    zip_safe=False,
)
