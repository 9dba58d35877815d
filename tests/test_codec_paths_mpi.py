"""The torch codec path (--codec torch: the run's vectors are tensors on --device, compressed with
torch_codec, payloads staged to host buffers for MPI) is what a GPU worker runs. On the CPU it must
train exactly as the native path (numpy vectors, C++ kernels): every algorithm, the sharded server,
the fp32 tail of --min-compress-numel, partial participation, LIEC-SGD's model averages, Adam, and a
resume whose checkpoint the other path wrote. The "-direct" cases hand MPI the payload tensors
themselves (--cuda-aware-mpi on: what a CUDA-aware MPI takes on a GPU; on the CPU through DLPack).

FO-SGD's workers and server take the eta scale here: with mse-debias the torch twin finds lam* by a
sort and the kernel by a bracketed search, equal to about 1e-12 relative but not always to the last
bit (the parameters then differed by up to 1.5e-8 after 6 steps), and drive's two sums run in
another order; test_kernels_equal, test_torch_codec and test_server_scale hold single encodes of
those rules to their bits and floats."""
import h5py
import numpy as np
import pytest
import torch

from fobsgd_mpi import algorithms
from fobsgd_mpi import train as train_cli

from .mpi_helpers import train_runs

COMMON = ["--dataset", "digits", "--width", "32", "--steps", "6", "--eval-every", "3", "--check-every", "2",
          "--batch-size", "16", "--worker-scale", "eta", "--server-scale", "eta"]
CASES = {
    **{name: ["--algorithm", name] for name in algorithms.names()},
    "sharded": ["--algorithm", "doublesqueeze", "--servers", "2", "--sign-scale", "block", "--block-size", "256"],
    "split": ["--algorithm", "fo-sgd", "--min-compress-numel", "1000"],
    "partial": ["--algorithm", "ef-sgd", "--participation", "0.67"],
    "liec-sync": ["--algorithm", "liec-sgd", "--liec-period", "2", "--momentum", "0"],
    "adam": ["--algorithm", "fo-sgd", "--optimizer", "adam", "--lr", "0.001"],
}
DIRECT = ["--cuda-aware-mpi", "on"]
CASES.update({
    "fo-sgd-direct": ["--algorithm", "fo-sgd", *DIRECT],
    "sharded-direct": [*CASES["sharded"], *DIRECT],
    "server-works-direct": ["--algorithm", "liec-sgd", "--server-also-works", "--liec-period", "3", *DIRECT],
    "partial-direct": [*CASES["partial"], *DIRECT],
})
# stopped after step 2 by one path, resumed by the other: state in a checkpoint is host numpy either way
RESUMED = ["--algorithm", "doublesqueeze", "--checkpoint-every", "3"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """{case: {codec: Run}}: every case on both paths, and the stopped halves, in one 4-rank job; then
    the resumes in a second job (a new process, so only the checkpoint carries the state)."""
    tmp = tmp_path_factory.mktemp("codec")
    runs = {f"{case}-{codec}": [*COMMON, *args, "--codec", codec] for case, args in CASES.items()
            for codec in ("native", "torch")}
    runs.update({f"resumed-{codec}": [*COMMON, *RESUMED, "--codec", codec, "--stop-at", "2"]
                 for codec in ("native", "torch")})
    runs["whole"] = [*COMMON, *RESUMED, "--codec", "native"]
    done = train_runs(4, tmp, runs)
    other = {"native": "torch", "torch": "native"}
    done.update(train_runs(4, tmp, {f"resumed-{codec}": [*COMMON, *RESUMED, "--codec", other[codec], "--resume"]
                                    for codec in ("native", "torch")}))
    return done


def final(run):
    with h5py.File(run.out) as f:
        return f["final_params"][:], f["iterations/bytes_up"][:], f["iterations/bytes_down"][:], f.attrs["device"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_torch_path_trains_bit_for_bit_as_the_native_one(case, paths):
    native, torch_path = final(paths[f"{case}-native"]), final(paths[f"{case}-torch"])
    assert np.array_equal(native[0], torch_path[0]), np.abs(native[0] - torch_path[0]).max()
    assert np.array_equal(native[1], torch_path[1]) and np.array_equal(native[2], torch_path[2])
    assert paths[f"{case}-torch"].summary["final_test_accuracy"] == paths[f"{case}-native"].summary["final_test_accuracy"]
    assert native[3] == torch_path[3] and native[3]  # the device the run computed on, in words


@pytest.mark.parametrize("codec", ["native", "torch"])
def test_a_checkpoint_of_one_path_resumes_on_the_other(codec, paths):
    assert np.array_equal(final(paths[f"resumed-{codec}"])[0], final(paths["whole"])[0])


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "--device must be cpu, cuda or cuda:N"),
    (["--codec", "native", "--device", "cuda:0"], "--codec native runs on the CPU"),
    (["--codec", "numpy"], "argument --codec: invalid choice: 'numpy'"),
    (["--cuda-aware-mpi", "yes"], "argument --cuda-aware-mpi: invalid choice: 'yes'"),
    pytest.param(["--device", "cuda"], "--device cuda: ", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_a_device_that_cannot_be_used_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    assert train_cli.main(["--quiet", "--out", str(tmp_path / "x.h5"), *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_gpu_ranks_train_with_identical_replicas_and_the_cpu_payloads(tmp_path, paths):
    """Every rank on its GPU (--check-every 2 compares the replicas' checksums); the payload sizes are
    the CPU run's. The parameters themselves may differ from the CPU's in the last bits (cuBLAS)."""
    run = train_runs(4, tmp_path, {"gpu": [*COMMON, "--algorithm", "fo-sgd", "--device", "cuda"]})["gpu"]
    params, up, down, where = final(run)
    _, cpu_up, cpu_down, _ = final(paths["fo-sgd-native"])
    assert np.array_equal(up, cpu_up) and np.array_equal(down, cpu_down)
    assert np.isfinite(params).all() and where.startswith(torch.cuda.get_device_name(0))
