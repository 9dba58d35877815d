"""The run's flat float32 vectors (parameters, gradients, directions, error memories) and payloads,
as numpy arrays or as torch tensors, through one small set of calls.

Two codec paths (--codec):
  native  numpy arrays on the host, the C++ kernels (fobsgd_mpi.native);
  torch   tensors on the model's device (--device), fobsgd_mpi.torch_codec, which runs the CUDA
          kernels on a GPU: a GPU gradient is compressed where it lives, and only payloads cross
          to the host, where MPI sends them.
`device` below is None for the native path, a torch.device for the torch one. The server's work
(aggregating the gathered rows, re-quantizing) always runs on host numpy rows with the native
kernels: the payloads are the same bits on every backend.
"""
import numpy as np

TORCH_DTYPES = {}  # numpy dtype -> torch dtype of a payload field (uint64 words travel as int64)


def is_tensor(x):
    return type(x).__module__.startswith("torch")


def device_of(x):
    """x's torch.device, or None for a numpy array."""
    return x.device if is_tensor(x) else None


def torch_dtype(dtype):
    import torch
    if not TORCH_DTYPES:
        TORCH_DTYPES.update({np.dtype(np.uint8): torch.uint8, np.dtype(np.uint32): torch.int32,
                             np.dtype(np.uint64): torch.int64, np.dtype(np.float32): torch.float32})
    return TORCH_DTYPES[np.dtype(dtype)]


def empty_bytes(nbytes, device=None, pinned=False):
    """A zeroed uint8 buffer: numpy (device None), else a tensor on `device`; `pinned`: a numpy view
    of page-locked memory, which a GPU copies to and from without a bounce."""
    if device is None and not pinned:
        return np.zeros(nbytes, dtype=np.uint8)
    import torch
    if device is None:
        return torch.zeros(nbytes, dtype=torch.uint8, pin_memory=True).numpy()
    return torch.zeros(nbytes, dtype=torch.uint8, device=device)


def field_view(buffer, offset, dtype, count):
    """`count` items of `dtype` at byte `offset` of a uint8 buffer, without a copy."""
    raw = buffer[offset : offset + np.dtype(dtype).itemsize * count]
    return raw.view(torch_dtype(dtype)) if is_tensor(buffer) else raw.view(dtype)


ALIGN = 64  # bytes: an AVX-512 vector, a cache line


def aligned_zeros(n, dtype=np.float32):
    """n zeros of `dtype` starting on an ALIGN-byte boundary. numpy puts large arrays 16 bytes past
    a page start, so every 64-byte load of the native FWHT straddles two cache lines: measured 1.8x
    slower at 2^21 floats (AVX-512, Intel Xeon), none below L2 sizes."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(n * itemsize + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + n * itemsize].view(dtype)


def zeros(n, device=None):
    """n float32 zeros: numpy (device None, ALIGN-aligned) or a tensor on `device`."""
    if device is None:
        return aligned_zeros(n)
    import torch
    return torch.zeros(n, dtype=torch.float32, device=device)


def zeros_like(x):
    return zeros(len(x), device_of(x))


def host(x):
    """x as a numpy array: itself, a CPU tensor's own memory, or a copy of a GPU tensor."""
    if not is_tensor(x):
        return x
    return x.detach().cpu().numpy()


def assign(dst, src):
    """dst[:] = src, for a numpy array or a tensor on either side (a copy across devices)."""
    if is_tensor(dst):
        import torch
        dst.copy_(src if is_tensor(src) else torch.from_numpy(np.ascontiguousarray(src)))
    else:
        dst[...] = host(src)


def like(x, values):
    """A new vector with `values` (numpy) where x lives (the numpy array itself for numpy x)."""
    if not is_tensor(x):
        return np.array(values, dtype=np.float32)
    out = zeros(len(values), x.device)
    assign(out, values)
    return out


def all_finite(x):
    if is_tensor(x):
        import torch
        return bool(torch.isfinite(x).all())
    return bool(np.isfinite(x).all())


def synchronize(x):
    """Wait for the work queued on a GPU tensor x's device (nothing to wait for elsewhere)."""
    if is_tensor(x) and x.is_cuda:
        import torch
        torch.cuda.current_stream(x.device).synchronize()


def copy(x):
    return x.clone() if is_tensor(x) else x.copy()
