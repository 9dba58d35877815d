"""MPI transport of payloads between the parameter server (rank 0) and the workers.

Each payload layout becomes one committed derived datatype (a struct over its fields), built once
and freed at exit; exchanges are buffer-based Gatherv / Bcast / Alltoallw on preallocated arrays,
never pickled: MPI-4 persistent collectives made once and started every step, or, on a library
without them (MPI 3.x, e.g. Open MPI 4), the nonblocking call each step. Byte counts are what each
rank hands to MPI, checked against the datatype's size.
"""
import os
import socket
import sys
import time

import numpy as np

from .errors import UsageError

SERVER = 0
COLLECTIVES = ("auto", "persistent", "nonblocking")  # --mpi-collectives
ABORT_GRACE_S = 1.0  # mpirun forwards a rank's stderr asynchronously: an abort right after a write can cut it off
POLL_S = 50e-6  # a polite wait polls without a pause this long, so a short exchange keeps MPI's latency,
MAX_PAUSE_S = 1e-3  # then pauses between polls, doubling up to this


def mpi():
    """mpi4py's MPI module, or a one-line error saying how to get a working MPI."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise SystemExit(f"error: mpi4py cannot load an MPI library ({exc}); run `make install` "
                         "(it installs the mpich wheel) or build mpi4py against your cluster's MPI") from None
    return MPI


def worker_ranks(n_ranks, server_works=False):
    """The ranks that compute gradients: all but the server (rank 0), or all with --server-also-works."""
    return list(range(0 if server_works else 1, n_ranks))


def abort_job(comm, exit_code):
    """End every rank of the job from this one, once what it wrote to stderr has had time to reach mpirun."""
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(exit_code)


def persistent_collectives(comm, MPI, choice="auto"):
    """Whether the exchanges use MPI-4 persistent collectives (--mpi-collectives): auto = where the
    library has them; a UsageError where `choice` is persistent and it has not."""
    has = hasattr(comm, "Gatherv_init") and MPI.Get_version() >= (4, 0)
    if choice == "persistent" and not has:
        library = MPI.Get_library_version().strip().splitlines()[0]
        raise UsageError(f"--mpi-collectives persistent needs an MPI-4 library; {library} implements MPI "
                         f"{'.'.join(map(str, MPI.Get_version()))}; use --mpi-collectives auto or nonblocking")
    return has and choice != "nonblocking"


def oversubscribed(comm):
    """Collective: whether this rank's node runs more of the job's ranks than this rank has cores."""
    host = socket.gethostname()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return comm.allgather(host).count(host) > cores


def complete(request, polite):
    """request.Wait(), or, `polite`, a wait that sleeps between polls. MPI's own wait spins: on a node
    with more ranks than cores the server spinning through the workers' backward pass takes a core
    from them (measured: a rank waiting 3 s in MPI_Recv used 3.0 s of CPU, a polite one 0.07 s)."""
    if not polite:
        request.Wait()
        return
    start, pause = time.perf_counter(), 0.0
    while not request.Test():
        if time.perf_counter() - start > POLL_S:
            time.sleep(pause)
            pause = min(2 * pause + 1e-5, MAX_PAUSE_S)


class PayloadTypes:
    """Committed MPI datatypes per PayloadSpec, freed together."""

    def __init__(self, MPI):
        self.MPI = MPI
        self._types = {}

    def __call__(self, spec):
        if spec not in self._types:
            MPI = self.MPI
            blocks = [count * np.dtype(dt).itemsize for _, dt, count in spec.fields]
            t = MPI.BYTE.Create_struct(blocks, list(spec.offsets.values()), [MPI.BYTE] * len(blocks))
            t = t.Create_resized(0, spec.nbytes)
            t.Commit()
            if t.Get_size() != sum(blocks) or t.Get_extent()[1] != spec.nbytes:
                raise RuntimeError(f"MPI datatype for {spec} has size {t.Get_size()}, expected {sum(blocks)}")
            self._types[spec] = t
        return self._types[spec]

    def selection(self, spec, ranges):
        """A committed datatype picking the byte `ranges` ((offset, length), in this order) out of
        a payload of `spec`: one server's blocks, sent straight from the whole payload."""
        key = (spec, tuple(ranges))
        if key not in self._types:
            t = self.MPI.BYTE.Create_hindexed([n for _, n in ranges], [off for off, _ in ranges])
            t.Commit()
            self._types[key] = t
        return self._types[key]

    def free(self):
        for t in self._types.values():
            t.Free()
        self._types.clear()


class Exchange:
    """One direction of one algorithm's traffic, on fixed buffers: a persistent MPI-4 collective
    (Gatherv_init / Bcast_init / Alltoallw_init) made once and started each iteration, or the
    nonblocking call (Igatherv / ...) each iteration; either way completed by `complete`, so a
    crowded node's ranks wait politely on both. Made collectively: every rank builds its exchanges
    in the same order."""

    def __init__(self, ps, persistent, nonblocking):
        self.request = persistent() if ps.persistent else None
        self.nonblocking = nonblocking
        self.polite = ps.polite
        self.rows = None

    def run(self):
        """Returns the gathered rows on the server of an uplink (None elsewhere)."""
        if self.request is None:
            complete(self.nonblocking(), self.polite)
        else:
            self.request.Start()
            complete(self.request, self.polite)
        return self.rows

    def free(self):
        if self.request is not None:
            self.request.Free()
            self.request = None


class Uplink(Exchange):
    """Gatherv of worker payloads; a round with a subset of workers uses a one-off Gatherv whose
    counts leave the others out (they send nothing), its rows packed first in rank order."""

    def __init__(self, ps, payload):
        spec = payload.spec
        self.ps, self.dtype = ps, ps.types(spec)
        if self.dtype.Get_size() != payload.nbytes:
            raise RuntimeError(f"MPI datatype sends {self.dtype.Get_size()} bytes, the payload holds {payload.nbytes}")
        self.all_rows = np.empty((ps.n_workers, spec.nbytes), dtype=np.uint8) if ps.is_server else None
        self.send_buf = payload.buffer if ps.is_worker else np.empty(0, np.uint8)
        send, recv = self.message(ps.workers)
        super().__init__(ps, lambda: ps.comm.Gatherv_init(send, recv, root=SERVER),
                         lambda: ps.comm.Igatherv(send, recv, root=SERVER))
        self.rows = self.all_rows

    def message(self, senders):
        counts = [1 if r in senders else 0 for r in range(self.ps.size)]
        displs = np.cumsum([0] + counts[:-1]).tolist()
        send = [self.send_buf if self.ps.rank in senders else self.send_buf[:0], counts[self.ps.rank], self.dtype]
        recv = [self.all_rows, counts, displs, self.dtype] if self.ps.is_server else None
        return send, recv

    def run(self, senders=None):
        if senders is None:
            return super().run()
        send, recv = self.message(senders)
        complete(self.ps.comm.Igatherv(send, recv, root=SERVER), self.polite)
        return self.all_rows[: len(senders)] if self.ps.is_server else None


class ShardedServer:
    """The server role split over ranks 0..k-1 (SPEC §1.1): block b of the vector belongs to
    server b % k. Uplink: one Alltoallw in which every worker sends each server its blocks
    straight out of its whole payload (a selection datatype per server, no packing copy), and
    server s receives them packed as its shard's payload (`layout`). Downlink: one Alltoallw in
    which every server sends its reduced shard (`out`, a payload of the down compressor) to every
    rank, landing in that rank's whole payload through the down payload's selection datatypes.
    Per iteration a worker moves one payload each way and server s one shard per worker each way,
    so with k = n a node's traffic does not grow with n."""

    def __init__(self, ps, k, layout, up_codec, down_codec, up, down):
        if k > layout.n_blocks:
            raise ValueError(f"--servers {k} exceeds the vector's {layout.n_blocks} blocks; lower --servers or "
                             "--block-size")
        MPI, size, rank = ps.MPI, ps.size, ps.rank
        blocks = [np.arange(s, layout.n_blocks, k) for s in range(k)]
        up_sel, up_bytes = self.selections(ps, up_codec, up.spec, layout, blocks)
        down_sel, down_bytes = self.selections(ps, down_codec, down.spec, layout, blocks)
        self.serves = rank < k
        self.layout = layout.subset(blocks[rank]) if self.serves else None
        self.out = down_codec.spec_of(self.layout).empty() if self.serves else None
        if self.serves:
            held = (up_codec.spec_of(self.layout).nbytes, self.out.nbytes)
            if held != (up_bytes[rank], down_bytes[rank]):
                raise RuntimeError(f"shard payloads hold {held[0]} / {held[1]} bytes, their selections "
                                   f"{up_bytes[rank]} / {down_bytes[rank]}")

        zeros, nothing = [0] * size, np.empty(0, np.uint8)
        servers = [r < k for r in range(size)]
        mine_up, mine_down = up_bytes[rank], down_bytes[rank]
        rows = np.empty((ps.n_workers, mine_up), np.uint8) if self.serves else None
        up_send = [up.buffer if ps.is_worker else nothing, [int(ps.is_worker and s) for s in servers], zeros, up_sel]
        up_recv = [rows if self.serves else nothing, [mine_up if r in ps.workers else 0 for r in range(size)],
                   [mine_up * ps.workers.index(r) if r in ps.workers else 0 for r in range(size)], [MPI.BYTE] * size]
        down_send = [self.out.buffer if self.serves else nothing, [mine_down] * size, zeros, [MPI.BYTE] * size]
        down_recv = [down.buffer, [int(s) for s in servers], zeros, down_sel]
        self.uplink = ps.track(Exchange(ps, lambda: ps.comm.Alltoallw_init(up_send, up_recv),
                                        lambda: ps.comm.Ialltoallw(up_send, up_recv)))
        self.uplink.rows = rows
        self.downlink = ps.track(Exchange(ps, lambda: ps.comm.Alltoallw_init(down_send, down_recv),
                                          lambda: ps.comm.Ialltoallw(down_send, down_recv)))

    @staticmethod
    def selections(ps, codec, spec, layout, blocks):
        """Per rank: the datatype selecting its blocks from a whole payload (MPI.BYTE on ranks
        that serve nothing, which receive no count of it), and its shard's byte count."""
        ranges = [codec.block_ranges(layout, mine) for mine in blocks]
        idle = ps.size - len(blocks)
        return ([ps.types.selection(spec, r) for r in ranges] + [ps.MPI.BYTE] * idle,
                [sum(n for _, n in r) for r in ranges] + [0] * idle)


class ParameterServer:
    """Gather of worker payloads to the server and broadcast of the server's payload.

    `workers` are the ranks that send (1..n-1, or all ranks with --server-also-works).
    """

    def __init__(self, comm, server_works=False, collectives="auto"):
        self.MPI = mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.server_works = server_works
        self.workers = worker_ranks(self.size, server_works)
        self.is_server = self.rank == SERVER
        self.is_worker = self.rank in self.workers
        self.types = PayloadTypes(self.MPI)
        self.persistent = persistent_collectives(comm, self.MPI, collectives)
        self.polite = oversubscribed(comm)  # whether its waits sleep between polls (complete)
        self.exchanges = []

    @property
    def n_workers(self):
        return len(self.workers)

    def track(self, exchange):
        self.exchanges.append(exchange)
        return exchange

    def uplink(self, payload):
        """Uplink gathering the workers' `payload` buffers into rows (n, nbytes) on the server;
        run() it after encoding into that buffer."""
        return self.track(Uplink(self, payload))

    def downlink(self, payload):
        """Exchange broadcasting the server's `payload` buffer into the same buffer everywhere."""
        msg = [payload.buffer, 1, self.types(payload.spec)]
        return self.track(Exchange(self, lambda: self.comm.Bcast_init(msg, root=SERVER),
                                   lambda: self.comm.Ibcast(msg, root=SERVER)))

    def sharded(self, k, layout, up_codec, down_codec, up, down):
        """The server role spread over ranks 0..k-1 (ShardedServer): `layout` splits the vector
        into blocks, the codecs (compressors) say where a block lies in their payloads `up` and
        `down`."""
        return ShardedServer(self, k, layout, up_codec, down_codec, up, down)

    def close(self):
        for ex in self.exchanges:
            ex.free()
        self.types.free()
