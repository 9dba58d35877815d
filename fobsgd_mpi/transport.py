"""MPI transport of payloads between the parameter server (rank 0) and the workers.

Each payload layout becomes one committed derived datatype (a struct over its fields), built once
and freed at exit; exchanges are buffer-based Gatherv / Bcast on preallocated arrays, never
pickled. Byte counts are what each rank hands to MPI, checked against the datatype's size.
"""
import numpy as np

SERVER = 0


def mpi():
    """mpi4py's MPI module, or a one-line error saying how to get a working MPI."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise SystemExit(f"error: mpi4py cannot load an MPI library ({exc}); run `make install` "
                         "(it installs the mpich wheel) or build mpi4py against your cluster's MPI") from None
    return MPI


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

    def free(self):
        for t in self._types.values():
            t.Free()
        self._types.clear()


class Exchange:
    """One direction of one algorithm's traffic, on fixed buffers: a persistent MPI-4 collective
    (Gatherv_init / Bcast_init) made once, started each iteration, or the blocking call on an
    MPI without them. Made collectively: every rank builds its exchanges in the same order."""

    def __init__(self, ps, persistent, blocking):
        self.request = persistent() if ps.persistent else None
        self.blocking = blocking

    def run(self):
        if self.request is None:
            return self.blocking()
        self.request.Start()
        self.request.Wait()

    def free(self):
        if self.request is not None:
            self.request.Free()
            self.request = None


class ParameterServer:
    """Gather of worker payloads to the server and broadcast of the server's payload.

    `workers` are the ranks that send (1..n-1, or all ranks with --server-also-works).
    """

    def __init__(self, comm, server_works=False):
        self.MPI = mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.server_works = server_works
        self.workers = list(range(0 if server_works else 1, self.size))
        self.is_server = self.rank == SERVER
        self.is_worker = self.rank in self.workers
        self.types = PayloadTypes(self.MPI)
        self.persistent = hasattr(comm, "Gatherv_init") and self.MPI.Get_version() >= (4, 0)
        self.exchanges = []

    @property
    def n_workers(self):
        return len(self.workers)

    def uplink(self, payload):
        """Exchange gathering every worker's `payload` buffer into `rows` (n_workers, nbytes) on the
        server (None elsewhere); run() it after encoding into that buffer."""
        spec = payload.spec
        dtype = self.types(spec)
        if dtype.Get_size() != payload.nbytes:
            raise RuntimeError(f"MPI datatype sends {dtype.Get_size()} bytes, the payload holds {payload.nbytes}")
        counts = [1 if r in self.workers else 0 for r in range(self.size)]
        displs = np.cumsum([0] + counts[:-1]).tolist()
        rows = np.empty((self.n_workers, spec.nbytes), dtype=np.uint8) if self.is_server else None
        send = [payload.buffer if self.is_worker else np.empty(0, np.uint8), counts[self.rank], dtype]
        recv = [rows, counts, displs, dtype] if self.is_server else None
        ex = Exchange(self, lambda: self.comm.Gatherv_init(send, recv, root=SERVER),
                      lambda: self.comm.Gatherv(send, recv, root=SERVER))
        ex.rows = rows
        self.exchanges.append(ex)
        return ex

    def downlink(self, payload):
        """Exchange broadcasting the server's `payload` buffer into the same buffer everywhere."""
        msg = [payload.buffer, 1, self.types(payload.spec)]
        ex = Exchange(self, lambda: self.comm.Bcast_init(msg, root=SERVER), lambda: self.comm.Bcast(msg, root=SERVER))
        self.exchanges.append(ex)
        return ex

    def close(self):
        for ex in self.exchanges:
            ex.free()
        self.types.free()
