"""benchmarks/synthetic_throughput.py end to end on a tiny workload: a harness algorithm and the
DDP peer on 8x8 synthetic images over a 100 Mbit link (the alpha-beta model where shaping needs
the root this process lacks), the records in HDF5 and the plot beside them."""
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
         "--image-size", "8", "--batch-size", "4", "--steps", "4", "--out", str(out),
         *([] if os.geteuid() == 0 else ["--model-network"])])
    printed = capsys.readouterr().out
    assert "total [images/s]" in printed and "encode+decode share [%]" in printed
    with h5py.File(out) as f:
        g = f["synthetic_throughput"]
        assert [a.decode() for a in g["algorithm"][:]] == ["fo-sgd", "ddp-none"], g["error"][:]
        assert (g["images_per_s"][:] > 0).all() and (g["images_per_s_worker"][:] > 0).all()
        np.testing.assert_allclose(g["images_per_s"][:], 2 * g["images_per_s_worker"][:])
        share = g["codec_share"][:]
        assert 0 < share[0] < 1 and np.isnan(share[1])  # DDP's hooks run inside the all-reduce: no share
        assert g["over_ddp_fp32"][1] == 1 and g["images_per_s"].attrs["units"] == "images/s, all workers"
    assert (tmp_path / "throughput-throughput.png").stat().st_size > 0
