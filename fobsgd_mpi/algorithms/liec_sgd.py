"""LIEC-SGD (arXiv 2402.11857; the authors' code, github chengyif/LIEC-SGD main.py): scaled sign
both ways with local immediate error compensation, and a full-precision step every H iterations.

Compressed steps: worker i sends C(g_i) and keeps e_i = g_i - C(g_i) (fresh, not accumulated);
the server broadcasts C(v) with v = mean_i C(g_i) + e_s and keeps e_s = v - C(v); worker i steps
along C(v) + e_i, its own error applied at once, so the replicas drift apart.

Synchronization steps, (t + 1) % H == 0 with H = --liec-period, as the reference does them: no
compressed exchange; the worker models are averaged in fp32 (Reduce + Bcast through rank 0),
then the workers' fp32 gradients are averaged as sgd does, the server adds e_s and resets it, and
every rank steps from the average model along that one direction. Each rank keeps its own
momentum buffer (so does the reference), so the replicas leave a synchronization step identical
only without momentum. A run that does not end on a synchronization step ends with one more
model average. Evaluations in between use the average of the worker models, reduced to the
server for the measurement only (not counted: training never needs it).

Bytes per worker: a compressed step sends the one-bit payload each way; a synchronization step
4 d (the model) + 4 d (the gradient) each way. At H = 32: 31 d / 8 + 8 d, about 10.8x fewer than
fp32 sgd's 32 * 4 d.
"""
import numpy as np

from .. import arrays
from .base import PSAlgorithm, ServerErrorFeedback
from .registry import register
from .sgd import SGD


class FullPrecisionSync(SGD):
    """A synchronization step's gradient exchange: the fp32 mean plus LIEC's e_s, then e_s = 0."""

    def __init__(self, liec, options):
        super().__init__(liec.ps, liec.d, options)
        self.liec = liec

    def server(self, rows, step):
        super().server(rows, step)
        self.server_out.values += self.liec.server_error
        self.liec.server_error[:] = 0


@register("liec-sgd")
class LIECSGD(ServerErrorFeedback, PSAlgorithm):
    up_compressor = down_compressor = "scaled-sign"
    state_names = ("local_error", "server_error")
    shardable = True  # the exchanges shard; the model averages still go through rank 0

    @classmethod
    def compressor_defaults(cls, options, n_workers):
        return {"sign_scale": "block"}  # SPEC 1.2: per bucket

    def __init__(self, ps, d, options):
        super().__init__(ps, d, options)
        self.local_error = arrays.zeros(d if ps.is_worker else 0, self.device)
        self.period = options.liec_period
        self.stateless_optimizer = not options.stateful_optimizer
        self.sync = FullPrecisionSync(self, options)
        self.spread = 0.0

    def synchronizes(self, step):
        return (step + 1) % self.period == 0

    def wire_specs(self):
        return super().wire_specs() + self.sync.wire_specs()

    def exchange(self, grad, step, timer, participants=None):
        if not self.synchronizes(step):
            self.spread = 0.0
            return super().exchange(grad, step, timer, participants)
        if self.params is None:
            raise RuntimeError("LIEC-SGD averages the models before a synchronization step's update: "
                               "call bind(params) before the first step")
        with timer("comm"):
            model_bytes = self.average_models(self.params)
        direction = self.sync.exchange(grad, step, timer, participants)
        self.bytes_up_worker = self.sync.bytes_up_worker + model_bytes
        self.bytes_down_worker = self.sync.bytes_down_worker + model_bytes
        return direction

    def encode_up(self, grad, step):
        payload = self.up.encode(grad, step, self.ps.rank, out=self.up_dev)
        self.local_error = grad - self.up.decode(payload, step, self.d)

    def idle_worker(self, step):
        self.local_error[:] = 0  # no gradient this round, so no error of its own to add

    def server(self, rows, step):
        self.compress_with_server_error(self.sum_up(rows), step)

    def direction(self, down, step):
        out = self.down.decode(down, step, self.d, out=self.dir_buf)
        if self.ps.is_worker:
            out += self.local_error
        return out

    def identical_after(self, step):
        return self.synchronizes(step) and self.stateless_optimizer

    def worker_average(self, params, everywhere):
        """Mean of the worker models (fp32 Reduce; + Bcast when `everywhere`, so all ranks get the
        same bits), a host numpy array; None on ranks that receive nothing."""
        comm, root = self.ps.comm, 0
        mine = arrays.host(params) if self.ps.is_worker else np.zeros(len(params), dtype=np.float32)
        total = np.empty_like(mine) if everywhere or self.ps.rank == root else None
        comm.Reduce(mine, total, op=self.ps.MPI.SUM, root=root)
        if everywhere:
            comm.Bcast(total, root=root)
        return None if total is None else np.multiply(total, np.float32(1.0 / self.ps.n_workers), out=total)

    def average_models(self, params):
        """Replace every rank's model by the workers' average and record the spread; returns the
        bytes one worker handed to MPI each way."""
        average = self.worker_average(params, everywhere=True)
        local = float(np.linalg.norm(arrays.host(params) - average)) if self.ps.is_worker else 0.0
        arrays.assign(params, average)
        self.spread = self.ps.comm.allreduce(local, op=self.ps.MPI.MAX)
        return average.nbytes

    def evaluated_params(self, params, step):
        return params if self.identical_after(step) else self.worker_average(params, everywhere=False)

    def finish(self, params, step):
        if self.identical_after(step):
            return 0, 0
        nbytes = self.average_models(params)
        return nbytes, nbytes
