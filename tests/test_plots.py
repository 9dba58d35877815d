"""Plots say what was run and in which units, and benchmark records say which commit made them:
checked on the matplotlib objects and the HDF5 attributes, from tiny files written here."""
import json
import re

import h5py
import numpy as np
import pytest

from fobsgd_mpi import report
from fobsgd_mpi.benchmarking import line_plot, link_traffic, save_records
from tests.benchmark_scripts import benchmark

UNIT = re.compile(r"\[.+\]")


def tiny_run(path, algorithm, wall_s):
    """A run file as fobsgd_mpi.train writes it, cut to what the report reads: 4 evaluations."""
    steps = np.arange(40)
    with h5py.File(path, "w") as f:
        f.attrs.update({"algorithm": algorithm, "n_workers": 4, "d": 1000,
                        "config": json.dumps({"dataset": "mnist1d", "model": "mlp", "target_accuracy": 0.5}),
                        "network_profile": json.dumps({"topology": "per-node", "rate_bps": 1e8, "latency_s": 0.05})})
        it = {"step": steps, "bytes_up": np.full(40, 4000), "bytes_down": np.full(40, 4000),
              "wall_s": wall_s * (steps + 1), "comm_s": np.full(40, wall_s / 2), "compute_s": np.full(40, wall_s / 2)}
        ev = {"step": steps[9::10], "test_accuracy": np.array([0.2, 0.35, 0.45, 0.52]),
              "test_loss": np.array([2.0, 1.6, 1.4, 1.3]), "bytes_up_total": 4000 * (steps[9::10] + 1),
              "wall_s": wall_s * (steps[9::10] + 1)}
        for group, data in (("iterations", it), ("evals", ev)):
            for k, v in data.items():
                f.create_dataset(f"{group}/{k}", data=v)
    return path


def test_report_plots_title_units_target_and_log_axes(tmp_path):
    runs = [report.load(tiny_run(tmp_path / "fo.h5", "fo-sgd", 0.01)),
            report.load(tiny_run(tmp_path / "sgd.h5", "sgd", 1.0))]
    figs = report.plot(runs, str(tmp_path / "r"))
    assert sorted(figs) == [str(tmp_path / "r-accuracy.png"), str(tmp_path / "r-loss.png")]
    acc = figs[str(tmp_path / "r-accuracy.png")]
    assert acc._suptitle.get_text() == "mnist1d, mlp, d = 1,000, n = 4 workers, 100 Mbit/s per-node links"
    for fig in figs.values():
        for ax in fig.axes:
            assert UNIT.search(ax.get_xlabel()) and UNIT.search(ax.get_ylabel())
    iterations, sent, wall = acc.axes
    assert iterations.get_xscale() == sent.get_xscale() == "linear"  # steps 10..40, 0.04..0.16 MB
    assert wall.get_xscale() == "log"  # 0.1..40 s
    assert all(ax.get_yscale() == "linear" for ax in acc.axes)  # accuracy 0.2..0.52
    for ax in acc.axes:
        targets = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert len(targets) == 1 and list(targets[0].get_ydata()) == [0.5, 0.5]


def test_line_plot_title_units_and_scales(tmp_path):
    fig = line_plot({"fo-sgd": ([2, 4, 8, 16], [10, 15, 17, 18]), "sgd": ([2, 4, 8, 16], [658, 2001, 3535, 8359])},
                    str(tmp_path / "p.png"), "ranks [processes]", "exchange time [ms]", "d = 1,048,576, 100mbit",
                    base=2)
    ax = fig.axes[0]
    assert ax.get_title() == "d = 1,048,576, 100mbit" and ax.get_xlabel() == "ranks [processes]"
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2 and ax.get_yscale() == "log"
    narrow = line_plot({"a": ([1, 2, 3], [5, 6, 7])}, str(tmp_path / "q.png"), "x [s]", "y [ms]", "t").axes[0]
    assert narrow.get_xscale() == narrow.get_yscale() == "linear"
    with pytest.raises(ValueError, match="no \\[unit\\]"):
        line_plot({"a": ([1], [1])}, str(tmp_path / "r.png"), "ranks", "y [ms]", "t")


def test_speedup_compares_like_with_like(tmp_path, monkeypatch):
    sweep = benchmark("bandwidth_sweep")
    drawn = {}
    monkeypatch.setattr(sweep, "line_plot",
                        lambda series, path, *rest, **kw: drawn.update({path.rsplit("-", 1)[1]: series}))
    rate = {"10mbit": 1, "100mbit": 10}
    records = [{"algorithm": a, "servers": k, "bandwidth": b, "ranks": 9, "d": 1000, "error": "",
                "step_ms": 1.0, "it_per_s": rate[b] * (2 if a == "fo-sgd" else 1) * (3 if k == "all" else 1)}
               for a in ("fo-sgd", "sgd") for k in ("1", "all") for b in ("100mbit", "10mbit")]
    written = sweep.plots(records, str(tmp_path / "s"))
    assert written == [str(tmp_path / f"s-{p}.png") for p in ("throughput", "speedup")]
    assert drawn["speedup.png"]["fo-sgd servers=all"] == ([10, 100], [2, 2])  # over sgd servers=all, not 6
    assert drawn["throughput.png"]["sgd servers=1"] == ([10, 100], [1, 10])  # in order of link speed


def test_records_carry_the_git_commit(tmp_path):
    path = save_records(str(tmp_path / "b.h5"), "b", [{"x": 1.0}], {"x": "s"})
    with h5py.File(path) as f:
        assert re.fullmatch(r"[0-9a-f]{40}", f.attrs["git_commit"])


def test_link_traffic_leaves_the_start_up_out():
    # rank 0 sends 1 MB of data shards at start-up, then 10 kB a step; a run of 5 steps
    full = {0: (1_000_000 + 5 * 10_000, 5 * 2_000), 1: (5 * 3_000, 1_000_000 + 5 * 9_000)}
    one = {0: (1_000_000 + 10_000, 2_000), 1: (3_000, 1_000_000 + 9_000)}
    got = link_traffic(full, one, 5)
    assert got == {"node_tx_per_step": 10_000, "node_rx_per_step": 9_000,
                   "node_tx_startup": 1_010_000, "node_rx_startup": 1_009_000}
