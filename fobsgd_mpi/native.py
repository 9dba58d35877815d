"""The C++ kernels (fobsgd_mpi._native), with the same functions and signatures as
fobsgd_mpi.reference. If the extension is not built, every function here is the numpy reference
and a warning says so once. Also the backend choice for any array (backend_for): numpy arrays
take these kernels, torch tensors fobsgd_mpi.torch_codec, which runs the CUDA kernels
(fobsgd_mpi._native_cuda, optional) on a GPU tensor when they are built.

    >>> import numpy as np
    >>> from fobsgd_mpi import native
    >>> x = np.ones(8, dtype=np.float32)
    >>> native.fwht_(x)[:2]
    array([2.828427, 0.      ], dtype=float32)
"""
import os
import warnings

import numpy as np

from . import arrays, reference
from .errors import NonFiniteError
from .reference import (LAMBDA_DRIVE, LAMBDA_MAX, LAMBDA_MIN, LAMBDA_MSE,  # noqa: F401  (re-exported)
                        LAMBDA_MSE_DEBIAS, LAMBDA_NORM, TIES_POSITIVE, TIES_RANDOM)

try:
    from . import _native
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    _native = None
    _missing = exc

ISAS = ("avx512", "avx2", "generic")


def _check(status, what):
    if status == 0:
        return
    if status == -2:
        raise NonFiniteError(f"{what}: input holds NaN or Inf; fix the gradient (lower the learning rate) before encoding")
    if status == -3:
        raise ValueError(f"{what}: this CPU lacks the requested instruction set")
    raise ValueError(f"{what}: bad arguments (status {status})")


def available():
    return _native is not None


def isa():
    """The instruction set the kernels run on now ("avx512", "avx2", "generic" or "numpy")."""
    return _native.isa() if _native else "numpy"


def supported_isas():
    return [name for name in ISAS if _native and _native.isa_supported(name)]


def set_isa(name=None):
    """Force an instruction set (None: the best this CPU has). FOBSGD_ISA sets it at import."""
    if _native is None:
        raise RuntimeError("the native extension is not built; run `make install`")
    if name is not None and name not in ISAS:
        raise ValueError(f"unknown instruction set {name!r}; choose one of {', '.join(ISAS)}")
    _check(_native.set_isa(name), f"set_isa({name!r})")


def fwht_plan(log_n, dtype=np.float32):
    """The FWHT schedule that runs rows of 2^log_n on this CPU under the active instruction set, as
    ((r0, radix, c1, tile, strip), isa, family, model): the plan, the instruction set whose kernel
    runs it (a plan may hand a size to the next narrower set) and the CPU family and model of its
    native/src/fwht_plan.h entry (model -1: measured for the family; both -1: the fallback)."""
    if _native is None:
        raise RuntimeError("the native extension is not built; run `make install`")
    return _native.fwht_plan(int(log_n), np.dtype(dtype) == np.float64)


def forced_isa_problem():
    """Why FOBSGD_ISA (read by the extension at import) cannot be honoured, or None."""
    name = os.environ.get("FOBSGD_ISA")
    if name and name not in supported_isas():
        offered = ", ".join(supported_isas()) or "none: the native extension is not built"
        return f"FOBSGD_ISA={name} is not an instruction set this CPU and build offer ({offered}); change or unset it"
    return None


def fwht_(x, normalize=True):
    """In-place Walsh-Hadamard transform over the last axis of a C-contiguous float32/float64 array.

    With `normalize` the transform is orthonormal (H / sqrt(n), its own inverse). Returns x.
    Raises ValueError for another dtype, a non-contiguous array or a length not a power of two.
    """
    return _native.fwht_(x, normalize)  # the checks of reference.check_fwht_input, in C++


def _work(layout, n_threads, rows=1):
    return arrays.aligned_zeros(rows * n_threads * int(layout.sizes.max()))


def encode_1bit(x, layout, rotate, rule, lambda_factor, seed, step, rank, bits, scales, n_threads=1):
    work = _work(layout, n_threads, 2 if rule in (LAMBDA_MSE, LAMBDA_MSE_DEBIAS) else 1)  # the MSE rules' scratch
    _check(_native.encode_1bit(x, layout.offsets, layout.log_sizes, layout.d, layout.block_ids, int(rotate), rule,
                               lambda_factor, seed, step, rank, work, bits, scales, n_threads),
           "encode_1bit")


def decode_1bit(bits, scales, layout, rotate, seed, step, out, weight=1.0, accumulate=False, n_threads=1):
    _check(_native.decode_1bit(bits, scales, layout.offsets, layout.log_sizes, layout.d, layout.block_ids,
                               int(rotate), seed, step, weight, accumulate, _work(layout, n_threads), out, n_threads),
           "decode_1bit")


def aggregate_1bit(payloads, scales_offset, weights, layout, out, n_threads=1):
    _check(_native.aggregate_1bit(payloads, scales_offset, weights, layout.offsets, layout.log_sizes, layout.d,
                                  out, n_threads), "aggregate_1bit")


def scaled_sign_encode(x, layout, ties, seed, step, bits, scales, n_threads=1):
    """Sign bits of x (an exact zero by the `ties` rule) into `bits`, and ||x_b||_1 / valid_b into
    `scales` (None: plain sign, `bits` of ceil(d / 64) words)."""
    _check(_native.scaled_sign_encode(x, layout.offsets, layout.log_sizes, layout.d, layout.block_ids, ties, seed,
                                      step, bits, scales, n_threads), "scaled_sign_encode")


def scaled_sign_decode(bits, scales, layout, out, weight=1.0, accumulate=False, n_threads=1):
    _check(_native.scaled_sign_decode(bits, scales, layout.offsets, layout.log_sizes, layout.d, weight, accumulate,
                                      out, n_threads), "scaled_sign_decode")


def majority_vote(words, layout, ties, seed, step, out):
    _check(_native.majority_vote(words, layout.offsets, layout.log_sizes, layout.d, layout.block_ids, ties, seed,
                                 step, out), "majority_vote")


def qsgd_encode(x, layout, levels, seed, step, rank, codes, norms, n_threads=1):
    _check(_native.qsgd_encode(x, layout.offsets, layout.log_sizes, layout.d, layout.block_ids, levels, seed, step,
                               rank, codes, norms, n_threads), "qsgd_encode")


def qsgd_decode(codes, norms, layout, levels, out, weight=1.0, accumulate=False, n_threads=1):
    _check(_native.qsgd_decode(codes, norms, layout.offsets, layout.log_sizes, layout.d, levels, weight, accumulate,
                               out, n_threads), "qsgd_decode")


def segment_abs_means(x, starts, means, n_threads=1):
    _check(_native.segment_abs_means(x, starts, means, n_threads), "segment_abs_means")


def segment_sign_decode(bits, starts, scales, out, weight=1.0, accumulate=False, n_threads=1):
    _check(_native.segment_sign_decode(bits, starts, scales, weight, accumulate, out, n_threads), "segment_sign_decode")


def segment_sign_aggregate(payloads, scales_offset, weights, starts, out, n_threads=1):
    _check(_native.segment_sign_aggregate(payloads, scales_offset, weights, starts, out, n_threads),
           "segment_sign_aggregate")


def mse_scales(v, layout, lams, unclipped, norms, n_threads=1):
    _check(_native.mse_scales(v, layout.offsets, layout.log_sizes, layout.d, _work(layout, n_threads), lams, unclipped,
                              norms, n_threads), "mse_scales")


KERNELS = ("fwht_", "encode_1bit", "decode_1bit", "aggregate_1bit", "scaled_sign_encode", "scaled_sign_decode",
           "majority_vote", "qsgd_encode", "qsgd_decode", "segment_abs_means", "segment_sign_decode",
           "segment_sign_aggregate", "mse_scales")

if _native is None:  # pragma: no cover
    warnings.warn(f"fobsgd_mpi._native is not built ({_missing}); using the numpy reference kernels, "
                  "which are 10-50x slower. Build it with `make install`.", RuntimeWarning, stacklevel=2)
    globals().update({name: getattr(reference, name) for name in KERNELS})


BACKENDS = ("native", "numpy", "torch", "cuda")
_cuda = {"enabled": os.environ.get("FOBSGD_CUDA_KERNELS", "1") != "0"}


def cuda_extension():
    """fobsgd_mpi._native_cuda, or None: not built (no nvcc or no CUDA torch at install, FOBSGD_CUDA=0),
    or turned off (set_cuda_kernels(False), FOBSGD_CUDA_KERNELS=0). Importing it launches nothing."""
    if not _cuda["enabled"]:
        return None
    if "module" not in _cuda:
        try:
            import torch  # loads the libcudart the extension links against
            from . import _native_cuda
            _cuda["module"] = _native_cuda if torch.version.cuda else None
        except ImportError:
            _cuda["module"] = None
    return _cuda["module"]


def set_cuda_kernels(enabled):
    """Use the CUDA kernels for GPU tensors where they apply (the default), or the torch codec's
    own operations everywhere (to compare the two)."""
    _cuda["enabled"] = bool(enabled)


def backend(name="native"):
    """The kernel module for a backend name: "native" (falls back to numpy if unbuilt), "numpy",
    or "torch" / "cuda" (fobsgd_mpi.torch_codec, which runs the CUDA kernels on GPU tensors)."""
    if name == "numpy":
        return reference
    if name == "native":
        import sys
        return sys.modules[__name__]
    if name in ("torch", "cuda"):
        from . import torch_codec
        return torch_codec
    raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")


def backend_for(x):
    """Which kernels an array gets: "cuda" for a GPU tensor when the CUDA kernels are built (and
    on), "torch" for any other tensor, "native" for a numpy array ("numpy" if the extension is not
    built). backend(backend_for(x)) is the module to call. For a CPU tensor, this module on
    x.numpy() (no copy) is about 40x faster than torch_codec."""
    if type(x).__module__.startswith("torch"):
        return "cuda" if x.is_cuda and cuda_extension() is not None else "torch"
    return "native" if available() else "numpy"
