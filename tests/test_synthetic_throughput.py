"""benchmarks/synthetic_throughput.py end to end on a tiny workload: a harness algorithm and the
DDP peer on 8x8 synthetic images over a 100 Mbit link (the alpha-beta model where shaping needs
the root this process lacks), the records in HDF5 and the plot beside them."""
import json
import os

import h5py
import numpy as np
import pytest

from .test_plots import benchmark

pytestmark = pytest.mark.mpi


def test_a_harness_algorithm_and_the_ddp_peer_record_images_per_second(tmp_path, capsys):
    out = tmp_path / "throughput.h5"
    benchmark("synthetic_throughput").main(
        ["--models", "mlp", "--algorithms", "fo-sgd", "ddp-none", "--bandwidths", "100mbit", "--workers", "2",
         "--image-size", "8", "--batch-size", "4", "--steps", "4", "--out", str(out), "--device", "cpu",
         "--train-flags=--block-size 1024 --downlink feedback", *([] if os.geteuid() == 0 else ["--model-network"])])
    printed = capsys.readouterr().out
    assert "total [images/s]" in printed and "encode+decode share [%]" in printed
    runs = printed.rsplit("runs in ", 1)[1].strip()
    with h5py.File(os.path.join(runs, "fo-sgd-mlp-100mbit.h5")) as f:  # the train flags reached the harness run
        config = json.loads(f.attrs["config"])
        assert (config["block_size"], config["downlink"], config["device"]) == (1024, "feedback", "cpu")
    with h5py.File(out) as f:
        g = f["synthetic_throughput"]
        assert [a.decode() for a in g["algorithm"][:]] == ["fo-sgd", "ddp-none"], g["error"][:]
        assert (g["images_per_s"][:] > 0).all() and (g["images_per_s_worker"][:] > 0).all()
        np.testing.assert_allclose(g["images_per_s"][:], 2 * g["images_per_s_worker"][:])
        share = g["codec_share"][:]
        assert 0 < share[0] < 1 and np.isnan(share[1])  # DDP's hooks run inside the all-reduce: no share
        assert g["over_ddp_fp32"][1] == 1 and g["images_per_s"].attrs["units"] == "images/s, all workers"
    assert (tmp_path / "throughput-throughput.png").stat().st_size > 0


@pytest.mark.parametrize("argv, problem", [
    (["--train-flags", "--steps 3"], "argument --train-flags: --steps is set by the benchmark itself; leave it out"),
    (["--train-flags", "--downlink sideways"], "argument --train-flags: train refuses '--downlink sideways'"),
    (["--device", "gpu"], "argument --device: must be cpu, cuda or cuda:N, got 'gpu'"),
    (["--device", "cuda:99"], "--device cuda:99: "),  # this CPU machine, or any node with fewer GPUs
])
def test_bad_flags_are_one_line_before_any_run(argv, problem, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark("synthetic_throughput").main(["--quick", *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and problem in err, err
