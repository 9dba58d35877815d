"""Where a rank computes (--device) and how its GPU payloads reach MPI.

    dev = device.select(cfg.device)          # cpu, or this node-local rank's GPU (UsageError if none)
    path = device.PayloadPath(dev, device.cuda_aware_mpi("auto"))
    comm.Gather(path.send_buffer(payload), ...)   # pinned host copy, or the GPU tensor itself
    clock = device.clock(dev)                # time.perf_counter that first waits for the GPU

Each rank takes GPU (node-local rank mod GPUs on the node), the node-local rank read from the
launcher's variables, so `mpirun -n 8` on a node of 4 GPUs puts two ranks on each. A CUDA-aware
MPI (MPIX_Query_cuda_support) reads and writes device memory itself; otherwise payloads are
staged through pinned host buffers, allocated once per size and reused.

fobsgd_mpi.ddp runs on the device today; the parameter-server loop (loop.py) still computes and
encodes on the CPU, and PayloadPath / cuda_aware_mpi are the pieces its GPU path is to use.
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
CUDA_AWARE_CHOICES = ("auto", "on", "off")


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


def activate(dev):
    """Make `dev` the current CUDA device (so NCCL, cuBLAS and new tensors use it); no-op on cpu."""
    if dev.type == "cuda":
        torch.cuda.set_device(dev)


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


def cuda_aware_mpi(choice="auto", query=mpi_cuda_support):
    """Whether to hand GPU buffers straight to MPI (--cuda-aware-mpi): auto = what the library says
    (no such query: no), on = trust it, off = always stage through host memory."""
    if choice not in CUDA_AWARE_CHOICES:
        raise UsageError(f"--cuda-aware-mpi must be one of {', '.join(CUDA_AWARE_CHOICES)}, got {choice!r}")
    return choice == "on" or (choice == "auto" and bool(query()))


class PayloadPath:
    """Byte buffers to hand MPI for tensors on `dev`: the tensor's own memory on the CPU or with a
    CUDA-aware MPI (after the device's work on it is done), else a pinned host buffer per role
    (send / recv) and size, reused from call to call."""

    def __init__(self, dev, cuda_aware=False):
        self.device = dev
        self.staged = dev.type == "cuda" and not cuda_aware
        self._host = {}

    def _pinned(self, role, nbytes):
        key = (role, nbytes)
        if key not in self._host:
            self._host[key] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        return self._host[key]

    def send_buffer(self, t):
        """A uint8 buffer with t's bytes, ready for MPI (numpy on the host, the tensor on a GPU)."""
        raw = t.contiguous().view(-1).view(torch.uint8)
        if raw.device.type == "cpu":
            return raw.numpy()
        if not self.staged:
            torch.cuda.current_stream(raw.device).synchronize()
            return raw
        host = self._pinned("send", raw.numel())
        host.copy_(raw, non_blocking=True)
        torch.cuda.current_stream(raw.device).synchronize()
        return host.numpy()

    def recv_buffer(self, t):
        """Where MPI may write the bytes meant for t (a contiguous tensor); then call finish_recv."""
        raw = t.view(-1).view(torch.uint8)
        if raw.device.type == "cpu":
            return raw.numpy()
        if not self.staged:
            torch.cuda.current_stream(raw.device).synchronize()  # no kernel still reading t
            return raw
        return self._pinned("recv", raw.numel()).numpy()

    def finish_recv(self, t):
        """Move what MPI wrote into recv_buffer(t) to t (a blocking copy: the buffer is reused)."""
        if self.staged and t.device.type == "cuda":
            t.view(-1).view(torch.uint8).copy_(self._pinned("recv", t.numel() * t.element_size()))


def clock(dev):
    """time.perf_counter, waiting first for the work queued on a GPU `dev`, so a phase timed with
    it (compute / encode / comm / decode) holds its own GPU work, not the next phase's."""
    if dev.type != "cuda":
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
    """What `dev` is, in words: the GPU's name, or the CPU's model and core count."""
    if dev.type == "cuda":
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
