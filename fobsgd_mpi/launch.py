"""Run an MPI job over real, traffic-shaped links (SPEC §3).

    python -m fobsgd_mpi.launch --bandwidth 100mbit -n 8 -- --algorithm fo-sgd --epochs 5
    python -m fobsgd_mpi.launch --bandwidth 1gbit --topology shared -n 4 -- python -m mpi4py.bench pingpong

per-node (default): every rank in its own network namespace with a veth pair to a bridge in a
"switch" namespace, MTU 9000, a token-bucket qdisc on both ends of each veth: a full-duplex NIC
per node behind a non-blocking switch. shared: all ranks in one namespace whose loopback is
shaped, so every byte of every rank crosses one link. Addresses come from 198.18.0.0/15 (reserved
for network benchmarks) and exist only inside the namespaces this tool makes; everything is
removed afterwards, also on Ctrl-C and failure, and leftovers of a crashed earlier run are removed
first. Needs root (CAP_NET_ADMIN) and iproute2. Arguments after `--` that start with `-` are
fobsgd_mpi.train flags; anything else is a command run on every rank.

netem is not in this kernel, so there is no added propagation delay: --latency is the token
bucket's queueing bound (tc tbf latency), not a delay.
"""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

from . import native
from .config import BOOL, INT, STR, Kind, Option, check, make_parser, text_type
from .errors import EXIT_INTERRUPTED, EXIT_USAGE
from .jobs import job_env, mpirun_path

PREFIX = "fobsgd"
LINK_BYTES = "# link bytes "
UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}


NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?)"


def parse_rate(text):
    """'100mbit' -> 1e8 bits/s (tc's units)."""
    m = re.fullmatch(NUMBER + r"\s*(bit|kbit|mbit|gbit|tbit)", text.strip().lower())
    if not m:
        raise ValueError(f"bandwidth {text!r} is not like 100mbit or 1gbit")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_time(text):
    m = re.fullmatch(NUMBER + r"\s*(s|ms|us)", text.strip().lower())
    if not m:
        raise ValueError(f"time {text!r} is not like 50ms")
    return float(m.group(1)) * {"s": 1, "ms": 1e-3, "us": 1e-6}[m.group(2)]


def show_rate(bps):
    unit = next((u for u in reversed(UNITS) if abs(bps) >= UNITS[u]), "bit")
    return f"{bps / UNITS[unit]:g}{unit}"


RATE = Kind("a rate like 100mbit or 1gbit", parse_rate, numeric=True, show=show_rate)
DURATION = Kind("a time like 50ms", parse_time, numeric=True, show=lambda s: f"{s * 1e3:g}ms")
RATE_BOUNDS, LATENCY_BOUNDS = (1e3, 1e12), (0, 60)
OPTIONS = (
    Option("-n", INT, None, "MPI ranks (workers + 1 for training), all on this machine", bounds=(1, 1024),
           required=True),
    Option("--bandwidth", RATE, None, "link rate, e.g. 10mbit, 100mbit, 1gbit; none: unshaped", bounds=RATE_BOUNDS),
    Option("--latency", DURATION, "50ms", "tbf queueing bound (no delay is added: no netem here)", bounds=LATENCY_BOUNDS),
    Option("--topology", STR, "per-node", "a link per rank behind a switch, or one shared loopback",
           choices=("per-node", "shared")),
    Option("--model-network", BOOL, False, "no shaping: run plainly and record the alpha-beta model for --bandwidth "
                                           "beside it"),
)


# argparse types for scripts that hand a rate or a time on to this launcher: checked as its flags are
rate_text = text_type(RATE, bounds=RATE_BOUNDS)
time_text = text_type(DURATION, bounds=LATENCY_BOUNDS)


def sh(*cmd, ns=None):
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    done = subprocess.run(full, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"`{' '.join(full)}` failed: {done.stderr.strip()}")
    return done.stdout


def rank_address(rank):
    return f"198.18.{rank // 250}.{rank % 250 + 1}"


class Network:
    """The namespaces, links and qdiscs of one run; a context manager that always tears down."""

    def __init__(self, n, rate_bps, latency_s, topology):
        self.n, self.rate, self.latency, self.topology = n, rate_bps, latency_s, topology
        self.tag = f"{PREFIX}{os.getpid()}"
        self.namespaces = []

    def ns(self, rank):
        return f"{self.tag}-shared" if self.topology == "shared" else f"{self.tag}-r{rank}"

    @property
    def interface(self):
        return "lo" if self.topology == "shared" else "eth0"

    def shape(self, dev, ns):
        if self.rate is None:
            return
        # The bucket must hold a whole (GSO) packet, or tbf drops it, and one timer tick of traffic;
        # anything more lets a short exchange pass above the rate (576 kB did: a 417 kB fp32 payload
        # per step crossed a 100 Mbit link faster than 100 Mbit allows).
        burst = max(1 << 17, int(self.rate / 8 / 1000))
        sh("tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{int(self.rate)}bit", "burst", str(burst),
           "latency", f"{max(self.latency, 1e-3) * 1e3:.3f}ms", ns=ns)

    def add_ns(self, name):
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "link", "set", "lo", "up", ns=name)

    def __enter__(self):
        remove_leftovers()
        try:
            if self.topology == "shared":
                self.add_ns(self.ns(0))
                self.shape("lo", self.ns(0))
                return self
            switch = f"{self.tag}-sw"
            self.add_ns(switch)
            sh("ip", "link", "add", "br0", "type", "bridge", ns=switch)
            sh("ip", "link", "set", "br0", "up", ns=switch)
            for r in range(self.n):
                ns, port = self.ns(r), f"p{r}"
                self.add_ns(ns)
                sh("ip", "link", "add", "eth0", "netns", ns, "mtu", "9000", "type", "veth", "peer", "name", port,
                   "netns", switch, "mtu", "9000")
                sh("ip", "addr", "add", f"{rank_address(r)}/15", "dev", "eth0", ns=ns)
                sh("ip", "link", "set", "eth0", "up", ns=ns)
                sh("ip", "link", "set", port, "master", "br0", ns=switch)
                sh("ip", "link", "set", port, "up", ns=switch)
                self.shape("eth0", ns)  # the node's uplink
                self.shape(port, switch)  # its downlink, the switch port's egress
            return self
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc):
        previous = ignore_ending_signals()  # a second Ctrl-C or a kill must not leave namespaces
        try:
            for name in reversed(self.namespaces):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            self.namespaces.clear()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def counters(self):
        """{rank: (tx_bytes, rx_bytes)} of each rank's interface (one entry for shared)."""
        ranks = [0] if self.topology == "shared" else range(self.n)
        out = {}
        for r in ranks:
            stats = json.loads(sh("ip", "-s", "-j", "link", "show", "dev", self.interface, ns=self.ns(r)))[0]["stats64"]
            out[r] = (stats["tx"]["bytes"], stats["rx"]["bytes"])
        return out

    def wrapper(self, folder):
        """A script that runs its arguments in the namespace of the rank MPI gave it."""
        path = os.path.join(folder, "in-rank-namespace")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
            if self.topology == "shared":
                f.write(f'exec ip netns exec {self.ns(0)} "$@"\n')
            else:
                f.write(f'exec ip netns exec "{self.tag}-r${{PMI_RANK:?needs an MPICH launcher}}" "$@"\n')
        os.chmod(path, 0o755)
        return path

    def env(self):
        """MPICH over TCP on the shaped interface, shared memory off so every byte crosses a link;
        torch.distributed (gloo) on the same interface, meeting at rank 0's address."""
        profile = {"topology": self.topology, "rate_bps": self.rate, "latency_s": self.latency, "ranks": self.n}
        return {"FI_PROVIDER": "tcp", "FI_TCP_IFACE": self.interface, "MPIR_CVAR_NOLOCAL": "1",
                "MPIR_CVAR_CH4_NETMOD": "ofi", "FOBSGD_NETWORK": json.dumps(profile),
                "GLOO_SOCKET_IFNAME": self.interface,
                "MASTER_ADDR": "127.0.0.1" if self.topology == "shared" else rank_address(0)}


def link_bytes(stdout):
    """{rank: (tx, rx)} from the '# link bytes' line the launcher prints, or None."""
    for line in stdout.splitlines():
        if line.startswith(LINK_BYTES):
            return {int(r): tuple(v) for r, v in json.loads(line[len(LINK_BYTES):])["tx_rx_per_rank"].items()}
    return None


def remove_leftovers():
    """Namespaces of earlier runs of this tool whose process is gone."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{PREFIX}(\d+)-.*", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def can_shape():
    if os.geteuid() != 0:
        return "network shaping needs root (CAP_NET_ADMIN)"
    if not (shutil.which("ip") and shutil.which("tc")):
        return "network shaping needs iproute2's ip and tc"
    return None


def command_for(rest):
    """What every rank runs: fobsgd_mpi.train with `rest` as its flags, or the command `rest`; a
    ValueError when that command is not an executable program (not once per rank from mpirun)."""
    if not rest or rest[0].startswith("-"):
        return [sys.executable, "-m", "fobsgd_mpi.train", *rest]
    if shutil.which(rest[0]) is None:
        raise ValueError(f"the command {rest[0]!r} after -- is not an executable program (on PATH or at that path); "
                         "check its name, or leave the command out to run fobsgd_mpi.train")
    return rest


def build_parser():
    return make_parser("python -m fobsgd_mpi.launch", __doc__, OPTIONS)


def ignore_ending_signals():
    """Ignores SIGINT and SIGTERM from now on; returns the handlers they had."""
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}


def run_job(cmd, env):
    """The job's exit status; on Ctrl-C or SIGTERM the job (whose mpirun got the Ctrl-C too) is
    asked to end its ranks, killed after 10 s, and the exception goes on to the cleanup."""
    try:
        job = subprocess.Popen(cmd, env=env)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"{cmd[0]} not found; install MPI (MPICH), or set MPIRUN to its "
                                              "mpirun") from None
    try:
        return job.wait()
    except BaseException:
        ignore_ending_signals()  # ending now: further Ctrl-Cs or kills must not cut the cleanup short
        job.terminate()
        try:
            job.wait(timeout=10)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
        raise


def launch(args, cmd):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill ends the job's ranks too (run_job)
    env = job_env()
    if args.model_network:
        env["FOBSGD_NETWORK"] = json.dumps({"topology": args.topology, "rate_bps": args.bandwidth,
                                            "latency_s": args.latency, "ranks": args.n, "modelled_only": True})
        return run_job([mpirun_path(), "-n", str(args.n), *cmd], env)
    problem = can_shape()
    if problem:
        print(f"error: {problem}; run as root, or pass --model-network for the alpha-beta model only",
              file=sys.stderr)
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="fobsgd-launch-") as tmp, \
            Network(args.n, args.bandwidth, args.latency, args.topology) as net:
        env.update(net.env())
        before = net.counters()
        status = run_job([mpirun_path(), "-n", str(args.n), net.wrapper(tmp), *cmd], env)
        after = net.counters()
        moved = {r: (after[r][0] - before[r][0], after[r][1] - before[r][1]) for r in after}
        print(LINK_BYTES + json.dumps({"topology": args.topology, "tx_rx_per_rank": moved}), flush=True)
        return status


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    try:
        args = build_parser().parse_args(ours)
        check(OPTIONS, args)
        if problem := native.forced_isa_problem():  # every rank would inherit it
            raise ValueError(problem)
        if args.model_network and args.bandwidth is None:
            raise ValueError("--model-network records the alpha-beta model of --bandwidth; give the rate to model, "
                             "e.g. --bandwidth 100mbit")
        cmd = command_for(rest)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return launch(args, cmd)
    except KeyboardInterrupt:
        print("error: interrupted; the job's ranks were ended and any network namespaces removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (RuntimeError, OSError) as exc:  # a failed ip / tc command, or mpirun missing
        print(f"error: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
