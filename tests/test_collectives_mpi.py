"""The exchanges on MPI 3's nonblocking collectives (--mpi-collectives nonblocking: what a library
without MPI-4's persistent ones, such as Open MPI 4, runs) train bit for bit as on the persistent
ones: one server, a sharded server (Alltoallw), a partial round (its one-off Igatherv), and LIEC-SGD's
model averages."""
import json
import os
import types

import h5py
import numpy as np
import pytest

from fobsgd_mpi import transport
from fobsgd_mpi.errors import UsageError

from .mpi_helpers import train_runs

COMMON = ["--dataset", "digits", "--width", "32", "--steps", "6", "--eval-every", "3", "--check-every", "2",
          "--batch-size", "16"]
CASES = {
    "fo-sgd": ["--algorithm", "fo-sgd"],
    "sharded": ["--algorithm", "fo-sgd", "--servers", "all", "--block-size", "256"],
    "partial": ["--algorithm", "ef-sgd", "--participation", "0.67"],
    "liec-sync": ["--algorithm", "liec-sgd", "--liec-period", "2"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collectives")
    return train_runs(4, tmp, {f"{case}-{way}": [*COMMON, *args, "--mpi-collectives", way]
                               for case, args in CASES.items() for way in ("persistent", "nonblocking")})


def recorded(run, way):
    with h5py.File(run.out) as f:
        crowded = 4 > len(os.sched_getaffinity(0))  # 4 ranks on this node
        assert json.loads(f.attrs["transport"]) == {"collectives": way, "polite_waits": crowded}
        return f["final_params"][:], f["iterations/bytes_up"][:], f["iterations/bytes_down"][:]


@pytest.mark.parametrize("case", sorted(CASES))
def test_nonblocking_collectives_train_bit_for_bit_as_persistent_ones(case, runs):
    persistent, nonblocking = (recorded(runs[f"{case}-{way}"], way) for way in ("persistent", "nonblocking"))
    for a, b in zip(persistent, nonblocking):
        assert np.array_equal(a, b)
    assert runs[f"{case}-nonblocking"].summary["final_test_accuracy"] == \
        runs[f"{case}-persistent"].summary["final_test_accuracy"]


def fake_mpi(version):
    return types.SimpleNamespace(Get_version=lambda: version,
                                 Get_library_version=lambda: "Open MPI v4.1.6, package: Open MPI\n")


def test_persistent_collectives_follow_the_library_and_the_flag():
    comm = types.SimpleNamespace(Gatherv_init=None)
    assert transport.persistent_collectives(comm, fake_mpi((4, 0)), "auto")
    assert not transport.persistent_collectives(comm, fake_mpi((4, 0)), "nonblocking")
    assert not transport.persistent_collectives(comm, fake_mpi((3, 1)), "auto")
    with pytest.raises(UsageError, match=r"needs an MPI-4 library; Open MPI v4\.1\.6, package: Open MPI "
                                         r"implements MPI 3\.1; use --mpi-collectives auto or nonblocking"):
        transport.persistent_collectives(comm, fake_mpi((3, 1)), "persistent")
