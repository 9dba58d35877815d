"""The Python API's example under mpirun, BN-correct evaluation, torch.optim state across a resume,
and Ctrl-C before the first step (real mpirun)."""
import importlib.util
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from fobsgd_mpi.jobs import job_env, mpirun_path

from .mpi_helpers import ROOT

pytestmark = pytest.mark.mpi
EXAMPLE = ROOT / "examples" / "resnet18_cifar.py"


def load_example():
    spec = importlib.util.spec_from_file_location("resnet18_cifar", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_trains_resnet18_and_its_reported_accuracy_is_the_saved_models(tmp_path):
    out, saved = tmp_path / "r18.h5", tmp_path / "r18.pt"
    args = ["--image-size", "8", "--steps", "2", "--batch-size", "4", "--eval-every", "1", "--out", out,
            "--save-model", saved]
    done = subprocess.run([mpirun_path(), "-n", "3", sys.executable, str(EXAMPLE), *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=job_env(), cwd=ROOT)  # ~90 s when busy
    assert done.returncode == 0, done.stderr[-3000:]
    example = load_example()
    model = example.build_model(seed=1)  # another initialization: every number comes from the file
    model.load_state_dict(torch.load(saved))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job's ranks
    try:
        loss, accuracy = example.evaluate(model, example.datasets(None, 8, 0)[1])
    finally:
        torch.set_num_threads(threads)
    buffer_bytes = 4 * sum(b.numel() for b in model.buffers() if b.is_floating_point())
    with h5py.File(out) as f:
        assert (f.attrs["status"], f.attrs["steps_done"]) == ("complete", 2)
        # worker 1 evaluated its replica after the buffers were averaged; the server saved its own
        # replica: the same numbers only if the server holds the workers' averaged statistics
        assert f["evals/test_accuracy"][-1] == accuracy
        assert f["evals/test_loss"][-1] == pytest.approx(loss, rel=1e-6)
        assert f["metrics/test_accuracy/value"][-1] == accuracy and f["metrics/test_accuracy/rank"][-1] == 1
        assert np.isfinite(f["metrics/train_loss/value"][:]).all()
        # the buffer averages before each evaluation, fp32, are counted: the one after step 0 in the
        # row of step 1, the one after the last step with the run's finish (shutdown adds none)
        up = f["iterations/bytes_up"][:]
        assert up[1] - up[0] == buffer_bytes and f.attrs["finish_bytes_up"] == buffer_bytes
        assert f["final_params"].size == sum(p.numel() for p in model.parameters())


def test_a_stopped_and_resumed_adam_run_equals_the_uninterrupted_one(stopped_and_resumed):
    whole, _, _, resumed = stopped_and_resumed["adam"]
    with h5py.File(whole.out) as a, h5py.File(resumed.out) as b:
        assert (b.attrs["status"], b.attrs["steps_done"]) == ("complete", 20)
        for key in ("step", "train_loss", "bytes_up"):
            assert np.array_equal(a["iterations"][key][:], b["iterations"][key][:]), key
        assert np.array_equal(a["evals/test_loss"][:], b["evals/test_loss"][:])
        assert np.array_equal(a["final_params"][:], b["final_params"][:])


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; scancel or a time limit
def test_a_stop_signal_before_the_first_step_records_status_interrupted(tmp_path, stop_signal):
    out = tmp_path / "early.h5"
    # rank 1's first gradient takes 1000 times as long (about a second), so the signal arrives before step 0 ends
    cmd = [mpirun_path(), "-n", "3", sys.executable, "-m", "fobsgd_mpi.train", "--quiet", "--out", str(out),
           "--width", "512", "--batch-size", "32", "--slow-ranks", "1:1000", "--steps", "5"]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=job_env(), cwd=ROOT)
    try:
        for line in job.stdout:
            if line.startswith("# fobsgd_mpi:"):  # printed after set-up, just before step 0
                job.send_signal(stop_signal)
                break
        _, stderr = job.communicate(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 128 + stop_signal, stderr[-2000:]
    assert stderr.startswith(f"interrupted ({stop_signal.name}) after 0 steps"), stderr[-2000:]
    with h5py.File(out) as f:
        assert (f.attrs["status"], f.attrs["steps_done"]) == ("interrupted", 0)
        assert len(f["iterations/step"]) == 0


# a worker script going wrong: {steps} steps on each worker, {fault} before each
FAULTY_WORKER = """
import torch
import fobsgd_mpi as fo

fo.init()
model = torch.nn.Linear(8, 2)
opt = fo.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, out={out!r})
if fo.is_server():
    fo.serve()
else:
    for step in range({steps}):
        {fault}
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 0, 1])).backward()
        opt.step()
fo.shutdown()
"""
FAILING_WORKER = FAULTY_WORKER.replace("{steps}", "3").replace(
    "{fault}", "if fo.rank() == 2 and step == 1: raise ValueError(\"the user's script failed on rank 2\")")
MISMATCHED_WORKERS = FAULTY_WORKER.replace("{steps}", "3 if fo.rank() == 1 else 2").replace("{fault}", "pass")


def test_an_uncaught_exception_on_one_rank_ends_the_job_instead_of_a_hang(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text(FAILING_WORKER.format(out=str(tmp_path / "run.h5")))
    done = subprocess.run([mpirun_path(), "-n", "3", sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240, env=job_env(), cwd=ROOT)
    assert done.returncode != 0 and "ValueError: the user's script failed on rank 2" in done.stderr, done.stderr[-2000:]
    with h5py.File(tmp_path / "run.h5", locking=False) as f:  # readable, though killed before its first flush
        assert f.attrs["algorithm"] == "fo-sgd" and "status" not in f.attrs


def test_an_error_every_rank_raises_is_one_line_and_the_results_are_closed(tmp_path):
    """Workers that make different numbers of steps: the ranks find it together, rank 0 says so once,
    the job exits 1 without an abort, and the file holds the steps done, status failed. A bad setting
    of the example (its --out exists) is one line and exit 2, the file untouched."""
    script, out = tmp_path / "mismatch.py", tmp_path / "run.h5"
    script.write_text(MISMATCHED_WORKERS.format(out=str(out)))
    done = subprocess.run([mpirun_path(), "-n", "3", sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240, env=job_env(), cwd=ROOT)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.startswith("error: the workers disagree at step 2") and done.stderr.count("\n") == 1, done.stderr
    with h5py.File(out) as f:
        assert f.attrs["status"] == "failed" and list(f["iterations/step"][:]) == [0, 1]
    kept = tmp_path / "kept.h5"
    kept.write_bytes(b"an earlier result")
    done = subprocess.run([mpirun_path(), "-n", "3", sys.executable, str(EXAMPLE), "--steps", "1", "--image-size", "8",
                           "--out", str(kept)], capture_output=True, text=True, timeout=240, env=job_env(), cwd=ROOT)
    assert done.returncode == 2 and done.stderr == f"error: {kept} exists; pass --overwrite or choose another --out\n", \
        done.stderr[-2000:]
    assert kept.read_bytes() == b"an earlier result"


API_ON_BOTH_PATHS = """
import sys
import torch
import fobsgd_mpi as fo

fo.init()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
model = model.to(fo.local_device("cpu"))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
opt = fo.DistributedOptimizer(opt, model, algorithm="doublesqueeze", out=sys.argv[2], codec=sys.argv[1])
if fo.is_server():
    fo.serve()
else:
    for step in range(6):
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(100 * fo.rank() + step))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), (x[:, 0] > 0).long()).backward()
        opt.step()
        if step % 3 == 2:
            opt.average_buffers()
            fo.log(running_mean=float(model[1].running_mean.sum()))
fo.shutdown()
"""


def test_the_api_trains_alike_on_the_native_and_the_torch_codec(tmp_path):
    """A CPU model through the API's tensor path (codec="torch", what a GPU model takes) gives the native
    path's model bit for bit, batch-norm averages included."""
    script = tmp_path / "both.py"
    script.write_text(API_ON_BOTH_PATHS)
    records = {}
    for codec in ("native", "torch"):
        out = tmp_path / f"{codec}.h5"
        done = subprocess.run([mpirun_path(), "-n", "3", sys.executable, str(script), codec, str(out)],
                              capture_output=True, text=True, timeout=240, env=job_env(), cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        with h5py.File(out) as f:
            records[codec] = (f["final_params"][:], f["metrics/running_mean/value"][:], f["iterations/bytes_up"][:])
    for native, torch_path in zip(records["native"], records["torch"]):
        assert np.array_equal(native, torch_path)
