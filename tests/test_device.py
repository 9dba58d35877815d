"""--device: which GPU a rank takes (fake launcher environments and GPU counts), the one-line refusals,
CUDA-aware MPI's choice, and the payload path and clock on the CPU (their GPU side runs in
benchmarks/gpu_suite.sh)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from fobsgd_mpi import device
from fobsgd_mpi.errors import UsageError


@pytest.mark.parametrize("environ, rank", [
    ({}, 0),
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "3"}, 3),
    ({"MPI_LOCALRANKID": "5"}, 5),
    ({"SLURM_LOCALID": "2"}, 2),
    ({"PMI_LOCAL_RANK": "7"}, 7),
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "1", "SLURM_LOCALID": "6"}, 1),  # mpirun inside an allocation: the launcher's
    ({"MPI_LOCALRANKID": "", "SLURM_LOCALID": "4"}, 4),  # an empty variable is no answer
])
def test_local_rank_from_launchers(environ, rank):
    assert device.local_rank(environ) == rank


@pytest.mark.parametrize("local, count, index", [(0, 4, 0), (3, 4, 3), (5, 4, 1), (7, 2, 1), (2, 1, 0)])
def test_cuda_takes_local_rank_mod_gpus(local, count, index):
    dev = device.select("cuda", environ={"MPI_LOCALRANKID": str(local)}, device_count=count)
    assert dev == torch.device("cuda", index)


def test_explicit_index_and_cpu():
    assert device.select("cuda:1", environ={}, device_count=2) == torch.device("cuda", 1)
    assert device.select("cpu", device_count=0) == torch.device("cpu")


@pytest.mark.parametrize("spec, count, message", [
    ("cuda", 0, "--device cuda: .* use --device cpu"),
    ("cuda:0", 0, "--device cuda:0: .* use --device cpu"),
    ("cuda:2", 2, "--device cuda:2: this node has 2 visible GPU\\(s\\), cuda:0 to cuda:1"),
    ("gpu", 1, "must be cpu, cuda or cuda:N"),
])
def test_refusals(spec, count, message):
    with pytest.raises((UsageError, ValueError), match=message):
        device.select(spec, environ={}, device_count=count)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_one_line_exit_2():
    done = subprocess.run([sys.executable, "-c", "from fobsgd_mpi import device, errors\n"
                           "try:\n    device.select('cuda')\n"
                           "except errors.UsageError as e:\n    print(e); raise SystemExit(e.exit_code)"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stdout.strip().splitlines()) == 1, done


@pytest.mark.parametrize("choice, library, aware", [
    ("auto", True, True), ("auto", False, False), ("auto", None, False),
    ("on", False, True), ("off", True, False),
])
def test_cuda_aware_choice(choice, library, aware):
    assert device.cuda_aware_mpi(choice, query=lambda: library) is aware


def test_cuda_aware_bad_choice():
    with pytest.raises(UsageError, match="--cuda-aware-mpi must be one of auto, on, off"):
        device.cuda_aware_mpi("yes")


def test_mpi_library_query_answers():
    assert device.mpi_cuda_support() in (True, False, None)


def test_cpu_payload_path_is_the_tensor_itself():
    path = device.PayloadPath(torch.device("cpu"), cuda_aware=False)
    assert not path.staged
    t = torch.arange(4, dtype=torch.float32)
    sent = path.send_buffer(t)
    assert sent.dtype == np.uint8 and np.array_equal(sent.view(np.float32), t.numpy())
    out = torch.zeros(4)
    path.recv_buffer(out)[:] = sent
    path.finish_recv(out)
    assert torch.equal(out, t)


def test_cpu_clock_is_perf_counter():
    import time

    assert device.clock(torch.device("cpu")) is time.perf_counter


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@needs_gpu
@pytest.mark.parametrize("cuda_aware", [False, True])
def test_gpu_payload_path_round_trip(cuda_aware):
    dev = device.select("cuda:0")
    path = device.PayloadPath(dev, cuda_aware=cuda_aware)
    assert path.staged is not cuda_aware
    t = torch.arange(1000, dtype=torch.float32, device=dev)
    sent = path.send_buffer(t)
    out = torch.zeros(1000, device=dev)
    recv = path.recv_buffer(out)
    if cuda_aware:
        recv.copy_(sent)
    else:
        recv[:] = sent
    path.finish_recv(out)
    assert torch.equal(out, t)
    before = device.clock(dev)()
    assert device.clock(dev)() >= before


def test_cpu_name_slug_and_best_seconds():
    cpu = torch.device("cpu")
    assert device.name(cpu).endswith("cpus")
    assert device.slug(cpu) and set(device.slug(cpu)) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    calls = []
    assert device.best_seconds(lambda: calls.append(1), cpu, repeats=3, loops=4) >= 0
    assert len(calls) == 1 + 3 * 4
