"""The bytes a run reports agree to the byte wherever they appear: the printed summary, the HDF5 file
(rows + the end-of-run exchange, results.py's bytes rule) and `python -m fobsgd_mpi.report`."""
import h5py
import pytest

from fobsgd_mpi import report

pytestmark = pytest.mark.mpi


def test_summary_file_and_report_agree_on_bytes(short_run):
    algorithm, out, summary = short_run  # LIEC-SGD's final model average happens after the last row
    with h5py.File(out) as f:
        files = {way: int(f[f"iterations/bytes_{way}"][:].sum()) + int(f.attrs[f"finish_bytes_{way}"])
                 for way in ("up", "down")}
        if algorithm == "liec-sgd":
            assert f.attrs["finish_bytes_up"] == 4 * f.attrs["d"]
    reported = report.load(out)
    for way in ("up", "down"):
        assert summary[f"bytes_{way}_per_worker"] == files[way] == reported[f"bytes_{way}"], way
