"""Where a rank computes (--device), and clocks that wait for it.

    dev = device.select(cfg.device)          # cpu, or this node-local rank's GPU (UsageError if none)
    clock = device.clock(dev)                # time.perf_counter that first waits for the GPU

Each rank takes GPU (node-local rank mod GPUs on the node), the node-local rank read from the
launcher's variables, so `mpirun -n 8` on a node of 4 GPUs puts two ranks on each. The
parameter-server loop keeps a GPU rank's vectors and payloads on its GPU and stages each payload
through a pinned host twin for MPI (algorithms/base.py); the DDP peer hands NCCL the tensors.
With a CUDA-aware MPI (mpi_cuda_support(), or --cuda-aware-mpi on) it hands MPI the GPU payloads
themselves (hands_tensors_to_mpi).
"""
import ctypes
import os
import re
import time

import torch

from .errors import UsageError

# Node-local rank: Open MPI, MPICH's Hydra, SLURM's srun, PMI-1 launchers
LOCAL_RANK_ENV = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "PMI_LOCAL_RANK")
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def device_rule(text):
    """config rule of --device: cpu, cuda (the node-local rank's GPU) or cuda:N."""
    if not DEVICE_PATTERN.fullmatch(text):
        raise ValueError(f"must be cpu, cuda or cuda:N, got {text!r}")


def local_rank(environ=None):
    """This process's rank among those on its node (0 when no launcher says)."""
    environ = os.environ if environ is None else environ
    for key in LOCAL_RANK_ENV:
        if environ.get(key, "").isdigit():
            return int(environ[key])
    return 0


def select(spec, environ=None, device_count=None):
    """The torch.device for --device `spec`: cpu; cuda:N; or cuda, GPU local_rank mod the GPUs
    visible. UsageError (one line, exit 2) when the GPU asked for is not there. `environ` and
    `device_count` stand in for the process's (tests)."""
    device_rule(spec)
    if spec == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if device_count is None else device_count
    if count == 0:
        why = "torch is a CPU-only build" if not torch.version.cuda else "no CUDA GPU is visible on this node"
        raise UsageError(f"--device {spec}: {why}; use --device cpu")
    if ":" in spec:
        index = int(spec.split(":")[1])
        if index >= count:
            raise UsageError(f"--device {spec}: this node has {count} visible GPU(s), cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    return torch.device("cuda", local_rank(environ) % count)


def use(spec):
    """select(spec), made this process's current device (so NCCL, cuBLAS and new tensors use it)."""
    dev = select(spec)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def vector_device(codec, dev):
    """Where a run's flat vectors live (arrays.py) for --codec `codec` on torch.device `dev`: None
    (numpy and the native codec, what auto takes on the CPU) or `dev` (the torch codec, what auto
    takes on a GPU). UsageError for the native codec on a GPU."""
    if dev.type == "cuda" and codec == "native":
        raise UsageError(f"--codec native runs on the CPU, not on {dev}; use --codec torch (or auto)")
    return dev if codec == "torch" or dev.type == "cuda" else None


def mpi_cuda_support():
    """MPIX_Query_cuda_support() of the MPI library mpi4py loaded (Open MPI's mpi-ext, MPICH >= 4):
    True or False, or None when the library has no such call."""
    from mpi4py import MPI

    try:
        query = ctypes.CDLL(MPI.__file__).MPIX_Query_cuda_support
    except (AttributeError, OSError):
        return None
    query.restype = ctypes.c_int
    return bool(query())


CUDA_AWARE_CHOICES = ("auto", "on", "off")


def hands_tensors_to_mpi(choice, dev, query=mpi_cuda_support):
    """Whether the loop gives MPI the payload tensors on `dev` as they are (--cuda-aware-mpi) instead
    of staging them through pinned host twins: never for numpy vectors (`dev` None) or with off;
    always with on (on the CPU, torch tensors reach MPI through DLPack); with auto, on a GPU whose MPI
    library says it is CUDA-aware."""
    if dev is None or choice == "off":
        return False
    return choice == "on" or (dev.type == "cuda" and bool(query()))


def clock(dev):
    """time.perf_counter, waiting first for the work queued on a GPU `dev`, so a phase timed with
    it (compute / encode / comm / decode) holds its own GPU work, not the next phase's (`dev`
    None: the host)."""
    if dev is None or dev.type != "cuda":
        return time.perf_counter

    def synchronized():
        torch.cuda.synchronize(dev)
        return time.perf_counter()

    return synchronized


def best_seconds(fn, dev, repeats=10, loops=10):
    """Best seconds per fn() on `dev`, each sample `loops` calls between two clock(dev) readings (so
    a GPU's queue is drained at both ends and launch overhead is amortised); one untimed call first."""
    read = clock(dev)
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = read()
        for _ in range(loops):
            fn()
        best = min(best, (read() - t0) / loops)
    return best


def name(dev):
    """What `dev` is, in words: the GPU's name, or the CPU's model and core count (`dev` None: the host)."""
    if dev is not None and dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} ({torch.cuda.get_device_properties(dev).total_memory / 2**30:.0f} GiB)"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "CPU"
    return f"{model}, {os.cpu_count()} cpus"


def slug(dev):
    """name(dev) as a file-name part: NVIDIA H200 (141 GiB) -> nvidia-h200."""
    words = name(dev).split(" (")[0].split(",")[0]
    return re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-")
