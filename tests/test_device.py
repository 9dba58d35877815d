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


def test_mpi_library_query_answers():
    assert device.mpi_cuda_support() in (True, False, None)


def test_cpu_clock_is_perf_counter():
    import time

    assert device.clock(torch.device("cpu")) is time.perf_counter


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@needs_gpu
def test_gpu_payload_twins_round_trip_through_pinned_host_memory():
    """A GPU payload copied to its pinned host twin (what MPI sends) and back is the same bytes."""
    from fobsgd_mpi.compressors import PayloadSpec
    dev = device.select("cuda:0")
    spec = PayloadSpec((("bits", np.uint64, 100), ("scales", np.float32, 3)))
    on_gpu, host = spec.empty(dev), spec.empty(pinned=True)
    on_gpu.bits.copy_(torch.arange(100, device=dev))
    on_gpu.scales.fill_(0.5)
    host.copy_from(on_gpu)
    assert host.bits.tolist() == list(range(100)) and host.scales.tolist() == [0.5] * 3
    back = spec.empty(dev)
    back.copy_from(host)
    assert torch.equal(back.buffer, on_gpu.buffer)
    before = device.clock(dev)()
    assert device.clock(dev)() >= before


def test_cpu_name_slug_and_best_seconds():
    cpu = torch.device("cpu")
    assert device.name(cpu).endswith("cpus")
    assert device.slug(cpu) and set(device.slug(cpu)) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    calls = []
    assert device.best_seconds(lambda: calls.append(1), cpu, repeats=3, loops=4) >= 0
    assert len(calls) == 1 + 3 * 4


@pytest.mark.parametrize("choice, dev, library, direct", [
    ("auto", None, True, False), ("on", None, True, False),  # numpy vectors: always host buffers
    ("auto", "cuda:0", True, True), ("auto", "cuda:0", False, False), ("auto", "cuda:0", None, False),
    ("auto", "cpu", True, False), ("on", "cpu", False, True), ("off", "cuda:0", True, False),
])
def test_payload_tensors_go_to_mpi_as_they_are_only_when_asked_or_cuda_aware(choice, dev, library, direct):
    dev = None if dev is None else torch.device(dev)
    assert device.hands_tensors_to_mpi(choice, dev, query=lambda: library) is direct


@pytest.mark.parametrize("codec, dev, where", [
    ("auto", "cpu", None), ("native", "cpu", None), ("torch", "cpu", "cpu"),
    ("auto", "cuda:0", "cuda:0"), ("torch", "cuda:1", "cuda:1"),
])
def test_the_codec_decides_where_the_vectors_live(codec, dev, where):
    got = device.vector_device(codec, torch.device(dev))
    assert got == (None if where is None else torch.device(where))


def test_the_native_codec_on_a_gpu_is_refused():
    with pytest.raises(UsageError, match="--codec native runs on the CPU, not on cuda:0"):
        device.vector_device("native", torch.device("cuda:0"))
