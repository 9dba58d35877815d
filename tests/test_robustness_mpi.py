"""Checkpoint / resume, failures, handshake, non-finite gradients, determinism (real mpirun)."""
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from fobsgd_mpi import checkpoint, report
from fobsgd_mpi import train as train_cli
from fobsgd_mpi.jobs import job_env, mpirun_path

from .mpi_helpers import ROOT, busy_out_refused_then_interrupted, mpirun, train, train_runs

pytestmark = pytest.mark.mpi
CURVES = ("step", "train_loss", "bytes_up", "bytes_down", "replica_spread")


def curves(path):
    with h5py.File(path) as f:
        return ({k: f["iterations"][k][:] for k in CURVES}, {k: f["evals"][k][:] for k in f["evals"] if k != "wall_s"},
                f["final_params"][:])


@pytest.mark.parametrize("algorithm", ["fo-sgd", "fo-sgd-feedback", "liec-sgd", "doublesqueeze"])
def test_stopped_and_resumed_run_equals_the_uninterrupted_one(algorithm, stopped_and_resumed):
    whole, first, stopped, resumed = stopped_and_resumed[algorithm]
    assert first.summary["steps"] == 10 and stopped == ("stopped", 10)
    with h5py.File(resumed.out) as f:
        assert (f.attrs["status"], f.attrs["steps_done"]) == ("complete", 16)
        wall = f["iterations/wall_s"][:]
    assert (np.diff(wall) > 0).all(), "wall_s restarted at the resume"
    (ia, ea, pa), (ib, eb, pb) = curves(whole.out), curves(resumed.out)
    for k in CURVES:
        assert np.array_equal(ia[k], ib[k]), k
    for k in ea:
        assert np.array_equal(ea[k], eb[k]), k
    assert np.array_equal(pa, pb)


def test_same_seed_gives_identical_curves(tmp_path):
    # 3 workers, so that a sum depending on the order in which their payloads arrive would show
    args = ["--algorithm", "fo-sgd", "--dataset", "digits", "--steps", "10", "--eval-every", "5"]
    a, _ = train(4, tmp_path, *args, name="a.h5")
    b, _ = train(4, tmp_path, *args, name="b.h5")
    (ia, ea, pa), (ib, eb, pb) = curves(a), curves(b)
    assert all(np.array_equal(ia[k], ib[k]) for k in CURVES)
    assert all(np.array_equal(ea[k], eb[k]) for k in ea) and np.array_equal(pa, pb)


def test_handshake_refuses_ranks_with_different_configs(tmp_path):
    out = tmp_path / "x.h5"
    py = [sys.executable, "-m", "fobsgd_mpi.train", "--quiet", "--steps", "3", "--out", str(out)]
    cmd = [mpirun_path(), "-n", "1", *py, "--lr", "0.1", ":", "-n", "2", *py, "--lr", "0.2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=job_env(), cwd=ROOT)
    assert done.returncode != 0
    assert "disagree with rank 0 on the config" in done.stderr


def test_non_finite_gradients_stop_or_skip(tmp_path):
    blow_up = ["--algorithm", "sgd", "--dataset", "synthetic-quadratic", "--model", "logreg", "--lr", "50",
               "--momentum", "0", "--lr-schedule", "constant", "--steps", "60", "--eval-every", "5",
               "--checkpoint-every", "10"]
    runs = train_runs(3, tmp_path, {"stop": blow_up, "skip": [*blow_up, "--on-nonfinite", "skip"]}, check=False)
    assert runs["stop"].returncode == 1 and "NaN or Inf gradient at step" in runs["stop"].stderr
    with h5py.File(runs["stop"].out) as f:  # rows up to the failure survive; the failed step is not done
        steps = f["iterations/step"][:]
        assert len(steps) > 0 and np.array_equal(steps, np.arange(len(steps)))
        assert (f.attrs["status"], f.attrs["steps_done"]) == ("failed", len(steps))
    out, summary, returncode, stderr = runs["skip"]
    assert returncode == 0, stderr[-2000:]
    with h5py.File(out) as f:
        assert f.attrs["skipped_steps"] > 0
        assert len(f["iterations/step"]) == 60 - f.attrs["skipped_steps"]
        assert (f.attrs["status"], f.attrs["steps_done"], summary["steps"]) == ("complete", 60, 60)
        # a skipped step skips its update only, not the evaluation or checkpoint due after it
        assert np.array_equal(f["evals/step"][:], np.arange(4, 60, 5))
    assert checkpoint.load_meta(str(out), 0)["step"] == 59


def _rank_pids(marker):
    pids = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in b" ".join(cmdline) and b"fobsgd_mpi.train" in b" ".join(cmdline):
            rank = [e for e in env if e.startswith(b"PMI_RANK=")]
            if rank:
                pids[int(rank[0].split(b"=")[1])] = int(pid)
    return pids


def test_killed_worker_ends_the_job_and_keeps_results(tmp_path):
    out = tmp_path / "killed.h5"
    cmd = [mpirun_path(), "-n", "3", sys.executable, "-m", "fobsgd_mpi.train", "--quiet", "--out", str(out),
           "--dataset", "digits", "--steps", "100000", "--eval-every", "20", "--checkpoint-every", "20"]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=job_env(), cwd=ROOT)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not os.path.exists(str(out) + ".ckpt/rank0.npz"):
            time.sleep(0.5)
        assert os.path.exists(str(out) + ".ckpt/rank0.npz"), "no checkpoint was written"
        time.sleep(2)
        os.kill(_rank_pids(str(out))[1], signal.SIGKILL)
        t0 = time.time()
        job.wait(timeout=30)
        assert time.time() - t0 < 30 and job.returncode != 0
    finally:
        if job.poll() is None:
            job.kill()
    with h5py.File(out) as f:  # readable, every flushed row there
        steps = f["iterations/step"][:]
        assert len(steps) >= 20 and np.array_equal(steps, np.arange(len(steps)))
    assert report.load(str(out))["status"] == "not closed"  # what a user reading it is told
    stop = len(steps) + 30  # past the last checkpoint, which is at most the last flushed row
    done = mpirun(3, "fobsgd_mpi.train", "--quiet", "--out", out, "--resume", "--dataset", "digits", "--steps",
                  "100000", "--eval-every", "20", "--checkpoint-every", "20", "--stop-at", stop)
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(out) as f:
        assert np.array_equal(f["iterations/step"][:], np.arange(stop + 1))


def test_overwrite_of_a_running_job_is_refused_and_ctrl_c_ends_it_cleanly(tmp_path):
    out = tmp_path / "busy.h5"
    returncode, stderr = busy_out_refused_then_interrupted(3, "fobsgd_mpi.train", out, "--dataset", "digits",
                                                           "--model", "logreg", "--steps", "100000",
                                                           "--eval-every", "20")
    assert returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().count("\n") == 0, stderr[-2000:]
    with h5py.File(out) as f:  # intact, and it says where it stopped
        steps = f["iterations/step"][:]
        assert stderr.startswith(f"interrupted (SIGINT) after {len(steps)} steps")
        assert len(steps) >= 40 and np.array_equal(steps, np.arange(len(steps)))
        assert (f.attrs["status"], f.attrs["steps_done"]) == ("interrupted", len(steps))
        assert "final_params" in f


def test_overwrite_clears_old_checkpoints_and_resume_checks_the_configuration(tmp_path):
    args = ["--dataset", "digits", "--model", "logreg", "--steps", "20", "--eval-every", "5", "--checkpoint-every", "5"]
    out, _ = train(3, tmp_path, *args, "--stop-at", "7")
    refused = mpirun(3, "fobsgd_mpi.train", "--quiet", "--out", out, "--resume", *args, "--lr", "0.2", "--seed", "1")
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr[-2000:]
    assert "another configuration: lr 0.08 there, 0.2 here, seed 0 there, 1 here" in refused.stderr
    # how far and how often may change on a resume
    done = mpirun(3, "fobsgd_mpi.train", "--quiet", "--out", out, "--resume", *args[:4], "--steps", "12",
                  "--eval-every", "3", "--checkpoint-every", "6")
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(out) as f:
        assert (f.attrs["status"], f.attrs["steps_done"]) == ("complete", 12)
    assert checkpoint.load_meta(str(out), 0)["step"] == 11
    # a resume with no step left to run is refused, the complete file untouched
    none_left = mpirun(3, "fobsgd_mpi.train", "--quiet", "--out", out, "--resume", *args[:4], "--steps", "12")
    assert none_left.returncode == 2 and none_left.stderr.strip().count("\n") == 0, none_left.stderr[-2000:]
    assert "has done 12 steps already, so --steps 12 leaves none to run" in none_left.stderr
    with h5py.File(out) as f:
        assert (f.attrs["status"], f.attrs["steps_done"]) == ("complete", 12)
    train(3, tmp_path, *args[:4], "--steps", "3", "--overwrite")
    assert not os.path.exists(checkpoint.directory(str(out)))


def test_a_resume_from_a_missing_checkpoint_or_a_damaged_results_file_is_refused_in_one_line(tmp_path):
    args = ["--dataset", "digits", "--model", "logreg", "--steps", "20", "--checkpoint-every", "5"]
    out, _ = train(3, tmp_path, *args, "--stop-at", "7")
    rank2 = os.path.join(checkpoint.directory(str(out)), "rank2.npz")
    os.rename(rank2, rank2 + ".moved")
    refused = mpirun(3, "fobsgd_mpi.train", "--quiet", "--out", out, "--resume", *args)
    assert refused.returncode == 2 and refused.stderr.startswith(f"error: cannot resume: no checkpoint {rank2} "), \
        refused.stderr[-2000:]
    assert refused.stderr.count("\n") == 1
    os.rename(rank2 + ".moved", rank2)
    out.write_bytes(b"not a results file")
    refused = mpirun(3, "fobsgd_mpi.train", "--quiet", "--out", out, "--resume", *args)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr[-2000:]
    assert refused.stderr.startswith(f"error: --resume: {out} is not a readable HDF5 file ("), refused.stderr
    assert refused.stderr.endswith("); restore it from a copy, or start afresh with --overwrite\n")
    assert out.read_bytes() == b"not a results file"


def test_resume_without_a_results_file_is_refused_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "none.h5"
    assert train_cli.main(["--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "does not exist, so there is no run to continue" in err, err
    assert os.listdir(tmp_path) == []


@pytest.fixture
def small_disk(tmp_path, request):
    """A tmpfs of request.param bytes, to fill."""
    mount = tmp_path / "disk"
    mount.mkdir()
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}", "tmpfs", str(mount)],
                           capture_output=True, text=True)
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({tried.stderr.strip() or 'mount failed'}); needs root")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lazy: a killed job may still hold a file


@pytest.mark.parametrize("small_disk", ["64k"], indirect=True)
def test_a_disk_too_full_for_the_new_file_ends_every_rank(small_disk):
    """The results file cannot be started (its first allocation needs results.HEADROOM_BYTES): rank 0
    says so once, the other ranks end too instead of waiting for it, and no empty file is left."""
    out = small_disk / "none.h5"
    done = mpirun(3, "fobsgd_mpi.train", "--quiet", "--out", str(out), "--dataset", "digits", "--model", "logreg",
                  "--steps", "2", timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().count("\n") == 0, done.stderr[-3000:]
    assert "No space left on device" in done.stderr and "no rows were written; free space, then run again" in done.stderr
    assert not out.exists()


# the writer allocates each flush's space plus results.HEADROOM_BYTES (256 KiB) first: on 600 KiB the
# first flush and checkpoint fit, the second flush does not
@pytest.mark.parametrize("small_disk", ["600k"], indirect=True)
def test_full_disk_ends_the_run_cleanly_and_keeps_file_and_checkpoint(small_disk, tmp_path):
    out = small_disk / "full.h5"
    args = ["--quiet", "--out", str(out), "--dataset", "digits", "--model", "logreg", "--steps", "100000",
            "--eval-every", "20", "--checkpoint-every", "20"]
    done = mpirun(3, "fobsgd_mpi.train", *args, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().count("\n") == 0, done.stderr[-3000:]
    assert "No space left on device" in done.stderr and done.stderr.startswith(f"error: cannot write {out}")
    last = int(done.stderr.split("rows up to step ")[1].split(";")[0])
    with h5py.File(out) as f:  # readable up to its last flush
        assert np.array_equal(f["iterations/step"][:], np.arange(last + 1))
        assert f.attrs["status"] == "failed" and f.attrs["steps_done"] > last
    assert not [p for p in os.listdir(checkpoint.directory(str(out))) if p.endswith(".tmp")]
    # the last checkpoint resumes on a disk with room
    moved = tmp_path / "moved.h5"
    shutil.copy(out, moved)
    shutil.copytree(checkpoint.directory(str(out)), checkpoint.directory(str(moved)))
    step = checkpoint.load_meta(str(moved), 0)["step"]
    resumed = mpirun(3, "fobsgd_mpi.train", *args[:1], "--out", moved, "--resume", *args[3:], "--stop-at", step + 5)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with h5py.File(moved) as f:
        assert np.array_equal(f["iterations/step"][:], np.arange(step + 6))


def test_a_polite_wait_leaves_the_cpu_to_others_and_still_receives():
    """What an oversubscribed node's ranks wait with (transport.complete): over a 2 s wait MPI's own
    spinning wait takes about a core, the polite one nearly nothing, and both receive the message."""
    done = mpirun(2, "tests.wait_probe", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    print(done.stdout)
    spin, polite = (dict(kv.split("=") for kv in line.split()) for line in done.stdout.strip().splitlines())
    assert (spin["polite"], spin["got"], polite["polite"], polite["got"]) == ("False", "1", "True", "2")
    assert float(polite["cpu_s"]) < 0.25
