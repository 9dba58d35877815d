"""Real traffic shaping in network namespaces (needs root and iproute2; skipped otherwise)."""
import json
import os
import shutil
import signal
import subprocess
import sys

import h5py
import pytest

from fobsgd_mpi import data, jobs, launch
from fobsgd_mpi.netmodel import NetworkModel

ROOTED = os.geteuid() == 0 and shutil.which("ip") and shutil.which("tc")
needs_root = pytest.mark.skipif(not ROOTED, reason="network namespaces need root and iproute2")
pytestmark = pytest.mark.mpi

PINGPONG = """
import time
import numpy as np
from mpi4py import MPI
c = MPI.COMM_WORLD
a = np.zeros(8_000_000, np.uint8)
c.Send(a[:1000], dest=1) if c.rank == 0 else c.Recv(a[:1000], source=0)   # connect first
c.Barrier()
t = time.perf_counter()
c.Send(a, dest=1) if c.rank == 0 else c.Recv(a, source=0)
c.Barrier()
if c.rank == 1:
    print("MBps", a.nbytes / (time.perf_counter() - t) / 1e6, flush=True)
"""


def run_launch(args, tmp_path, env=None):
    done = jobs.launch(*args, timeout=300, env=env)
    return done, launch.link_bytes(done.stdout)


def namespaces():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def alive(namespace):
    """Whether the launcher whose pid the namespace's name carries (fobsgd<pid>-...) still runs."""
    pid = namespace[len(launch.PREFIX):].split("-")[0]
    return pid.isdigit() and os.path.exists(f"/proc/{pid}")


@needs_root
@pytest.mark.parametrize("topology", ["per-node", "shared"])
def test_shaped_rate_is_the_configured_one(topology, tmp_path):
    script = tmp_path / "pp.py"
    script.write_text(PINGPONG)
    before = set(namespaces().split())
    done, links = run_launch(["--bandwidth", "50mbit", "--topology", topology, "-n", "2", "--",
                              sys.executable, str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rate = float(next(l.split()[1] for l in done.stdout.splitlines() if l.startswith("MBps")))
    assert rate == pytest.approx(50e6 / 8 / 1e6, rel=0.10)
    # everything the launcher made is removed (other jobs' namespaces may come and go meanwhile)
    assert not [ns for ns in set(namespaces().split()) - before if ns.startswith(launch.PREFIX) and not alive(ns)]


@needs_root
def test_harness_bytes_match_interface_counters(tmp_path):
    out = tmp_path / "run.h5"
    done, links = run_launch(["--bandwidth", "1gbit", "-n", "3", "--", "--algorithm", "sgd", "--steps", "10",
                              "--quiet", "--out", str(out), "--eval-every", "10"], tmp_path,
                             env={"MPIR_CVAR_BCAST_INTRA_ALGORITHM": "binomial"})
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(out) as f:
        up = int(f["iterations/bytes_up"][:].sum())
        down = int(f["iterations/bytes_down"][:].sum())
        assert json.loads(f.attrs["network_profile"])["rate_bps"] == 1e9
        assert (f["iterations/modelled_comm_s"][:] > 0).all()
    ds = data.load("mnist1d")
    shard = len(ds.x_train) // 2 * (ds.x_train[0].nbytes + ds.y_train[0].nbytes)  # scattered to each worker
    for rank in (1, 2):
        tx, rx = links[rank]
        # the counters hold the payloads plus TCP/IP and MPI headers and the small control messages
        assert up <= tx <= 1.05 * up + 200_000, (rank, tx, up)
        assert down + shard <= rx <= 1.05 * (down + shard) + 200_000, (rank, rx, down, shard)


@pytest.mark.parametrize("args", [["--bandwidth", "fast", "-n", "2"], ["--bandwidth", "0mbit", "-n", "2"],
                                  ["--bandwidth", "1.2.3mbit", "-n", "2"], ["--bandwidth", "5tbit", "-n", "2"],
                                  ["-n", "100000"], ["-n", "0"], ["-n", "x"], [], ["-n", "2", "--latency=-1ms"],
                                  ["-n", "2", "--latency", "-5ms"],
                                  ["-n", "2", "--latency", "1e9s"], ["-n", "2", "--topology", "ring"]])
def test_bad_flags_are_one_line_errors_with_exit_2(args, capsys):
    assert launch.main([*args, "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_a_command_that_is_not_a_program_is_one_line_with_exit_2_before_mpirun(capsys):
    assert launch.main(["--model-network", "--bandwidth", "1gbit", "-n", "2", "--", "no-such-command", "-x"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: the command 'no-such-command' after -- is not an executable program (on PATH or at that "
                   "path); check its name, or leave the command out to run fobsgd_mpi.train\n")


def test_an_unknown_forced_instruction_set_is_one_line_with_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("FOBSGD_ISA", "sse9")
    assert launch.main(["--model-network", "-n", "2", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: FOBSGD_ISA=sse9") and err.count("\n") == 1, err


def test_without_root_shaping_is_refused_in_one_line():
    if os.geteuid() != 0:
        done = jobs.launch("--bandwidth", "1gbit", "-n", "2", timeout=60)
        assert done.returncode == 2 and "needs root" in done.stderr and "--model-network" in done.stderr


def foreground(cmd):
    """`cmd` as a terminal starts a foreground job: SIGINT at its default action, also where these
    tests run with it ignored (a background job of a non-interactive shell, nohup), which the
    launcher, as any program, would inherit and respect."""
    return [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                                  "os.execv(sys.argv[1], sys.argv[1:])", *cmd]


SLEEPER = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); print('up', flush=True); time.sleep(300)"


@pytest.mark.parametrize("mode", ["--model-network", "--topology=shared"])
def test_ctrl_c_ends_the_job_in_one_line_with_exit_130_and_removes_namespaces(mode):
    if mode != "--model-network" and not ROOTED:
        pytest.skip("network namespaces need root and iproute2")
    marker = f"fobsgd-sleeper-{os.getpid()}"
    job = subprocess.Popen(foreground([sys.executable, "-m", "fobsgd_mpi.launch", mode, "--bandwidth", "1gbit", "-n",
                                       "2", "--", sys.executable, "-c", f"{SLEEPER}  # {marker}"]), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=jobs.job_env(), cwd=jobs.ROOT, start_new_session=True)
    try:
        seen = ""
        while seen.count("up") < 2:  # both ranks started (their lines may interleave)
            line = job.stdout.readline()
            assert line, "the job ended before its ranks started"
            seen += line
        os.killpg(job.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        _, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 130 and err.strip().splitlines()[-1].startswith("error: interrupted"), err
    assert "Traceback" not in err, err
    assert f"{launch.PREFIX}{job.pid}-" not in namespaces()
    assert not processes_with(marker), "a rank outlived the launcher"


@pytest.mark.parametrize("mode", ["--model-network", "--topology=shared"])
def test_a_job_past_its_timeout_ends_its_ranks_and_removes_namespaces(mode):
    if mode != "--model-network" and not ROOTED:
        pytest.skip("network namespaces need root and iproute2")
    marker = f"fobsgd-sleeper-{os.getpid()}-timeout"
    with pytest.raises(subprocess.TimeoutExpired):
        jobs.launch(mode, "--bandwidth", "1gbit", "-n", "2", "--", sys.executable, "-c", f"{SLEEPER}  # {marker}",
                    timeout=10)
    assert not [ns for ns in namespaces().split() if ns.startswith(launch.PREFIX) and not alive(ns)]
    assert not processes_with(marker), "a rank outlived the launcher"


def processes_with(marker):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                found.append(pid)
        except OSError:  # gone meanwhile
            pass
    return found


@needs_root
def test_a_failed_shaping_command_is_one_line_and_removes_namespaces(monkeypatch, capsys):
    def broken(self, dev, ns):
        raise RuntimeError(f"`tc qdisc replace dev {dev}` failed: simulated")

    monkeypatch.setattr(launch.Network, "shape", broken)
    assert launch.main(["--bandwidth", "1gbit", "-n", "2", "--", "true"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: `tc qdisc") and err.count("\n") == 1, err
    assert f"{launch.PREFIX}{os.getpid()}-" not in namespaces()


@needs_root
def test_leftovers_of_a_crashed_run_are_removed(tmp_path):
    stale = f"{launch.PREFIX}999999-r0"  # no such process
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        launch.remove_leftovers()
        assert stale not in namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


def test_model_network_runs_unshaped_and_records_the_model(tmp_path):
    out = tmp_path / "m.h5"
    done, _ = run_launch(["--model-network", "--bandwidth", "100mbit", "-n", "3", "--", "--algorithm", "fo-sgd",
                          "--steps", "4", "--quiet", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(out) as f:
        assert json.loads(f.attrs["network_profile"])["modelled_only"]
        modelled = f["iterations/modelled_comm_s"][:]
        d = int(f.attrs["d"])
    # fo-sgd at 100 Mbit, 2 workers, 3 ranks: two payloads of about d/8 bytes into the server, and a
    # broadcast of one that costs two payload times either way: 4 * (d/8) * 8 bits / 1e8 bit/s
    assert modelled[0] == pytest.approx(4 * d / 1e8, rel=0.1)


@needs_root
def test_sharded_server_keeps_every_node_near_one_payload_each_way(tmp_path):
    """4 workers, 5 ranks, 30 steps, counted on the interfaces: with --servers 1 the server's link
    takes in 4 payloads a step; with --servers all no link moves more than its payload plus its
    shard from (to) every rank, i.e. under 2 payloads each way (SPEC §1.1)."""
    steps, busiest = 30, {}
    for servers in ("1", "all"):
        out = tmp_path / f"s{servers}.h5"
        done, links = run_launch(["--bandwidth", "1gbit", "-n", "5", "--", "--algorithm", "fo-sgd", "--servers",
                                  servers, "--dataset", "synthetic-logreg", "--model", "mlp", "--width", "512",
                                  "--block-size", "4096", "--steps", str(steps), "--eval-every", str(steps), "--quiet",
                                  "--out", str(out)], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        with h5py.File(out) as f:
            payload = int(f["iterations/bytes_up"][0])
        start_up = 400_000  # the data shards, the handshake and the final checks, whatever the servers
        busiest[servers] = max(max(tx, rx) for tx, rx in links.values())
        if servers == "1":
            assert links[0][1] >= 4 * steps * payload
        else:
            assert busiest[servers] <= 1.05 * 2 * steps * payload + start_up, (busiest, payload)
    assert busiest["all"] < 0.6 * busiest["1"], busiest


def test_the_model_counts_only_bytes_that_leave_a_node():
    m = NetworkModel("per-node", 1e8, alpha_s=0.0)
    t = 8 * 1000 / 1e8  # one 1000-byte payload over one link
    assert m.exchange_seconds(1000, 0, 4, 5) == pytest.approx(4 * t)  # 4 payloads into an idle server
    assert m.exchange_seconds(1000, 0, 4, 4, server_sends=True) == pytest.approx(3 * t)  # its own stays put
    for n in (2, 16):  # every rank serves and works: (n - 1) / n of a payload each way on every link
        assert m.exchange_seconds(1000, 1000, n, n, n, server_sends=True) == pytest.approx(2 * (n - 1) / n * t)
    # 4 of 8 ranks serve: a server takes 7 quarter-payloads up and gives 7 down
    assert m.exchange_seconds(1000, 1000, 8, 8, 4, server_sends=True) == pytest.approx(2 * 7 / 4 * t)


@needs_root
def test_exchange_scaling_benchmark_times_shaped_exchanges(tmp_path):
    """benchmarks/exchange_scaling.py end to end on 3 ranks, one server and all: each exchange moves a payload
    through a shaped link (131 kB, above the 128 kB tbf burst), so it cannot take less than half
    the payload's time on the wire."""
    script = os.path.join(jobs.ROOT, "benchmarks", "exchange_scaling.py")
    done = subprocess.run([sys.executable, script, "--ranks", "3", "--algorithms", "fo-sgd", "--servers", "1",
                           "all", "--d", "1048576", "--reps", "4", "--bandwidth", "100mbit"], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=jobs.job_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (path,) = (tmp_path / "results").glob("exchange_scaling-*.h5")
    with h5py.File(path) as f:
        g = f["exchange_scaling"]
        assert [s.decode() for s in g["error"][:]] == [""] * 2
        wire = 8 * g["bytes_up"][:] / 1e8
        assert (g["exchange_ms"][:] / 1e3 > 0.5 * wire).all(), (g["exchange_ms"][:], wire)
