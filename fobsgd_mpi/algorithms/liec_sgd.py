"""LIEC-SGD (arXiv 2402.11857): scaled sign both ways with local immediate error compensation.

Worker i sends C(g_i) and keeps e_i = g_i - C(g_i) (fresh, not accumulated); the server
broadcasts C(v) with v = mean_i C(g_i) + e_s and keeps e_s = v - C(v); worker i steps along
C(v) + e_i, its own error applied at once. Replicas therefore drift apart; every H iterations
(--liec-period) and at the end of the run the models are averaged in full precision (counted in
the bytes) and e_s is reset. Evaluations between averages use the average of the worker models,
reduced to the server for the measurement only (not counted: training never needs it).
"""
import numpy as np

from .base import PSAlgorithm, ServerErrorFeedback
from .registry import register


@register("liec-sgd")
class LIECSGD(ServerErrorFeedback, PSAlgorithm):
    up_compressor = down_compressor = "scaled-sign"
    compressor_defaults = {"sign_scale": "block"}  # SPEC 1.2: per bucket
    state_names = ("local_error", "server_error")
    shardable = True  # the exchange shards; the model averages still go through rank 0

    def __init__(self, ps, d, cfg):
        super().__init__(ps, d, cfg)
        self.local_error = np.zeros(d if ps.is_worker else 0, dtype=np.float32)
        self.period = cfg.liec_period
        self.spread = 0.0

    def encode_up(self, grad, step):
        payload = self.up.encode(grad, step, self.ps.rank, out=self.up_buf)
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
        return (step + 1) % self.period == 0

    def worker_average(self, params, everywhere):
        """Mean of the worker models (fp32 Reduce; + Bcast when `everywhere`, so all ranks get the
        same bits); None on ranks that receive nothing."""
        comm, root = self.ps.comm, 0
        mine = params if self.ps.is_worker else np.zeros_like(params)
        total = np.empty_like(params) if everywhere or self.ps.rank == root else None
        comm.Reduce(mine, total, op=self.ps.MPI.SUM, root=root)
        if everywhere:
            comm.Bcast(total, root=root)
        return None if total is None else np.multiply(total, np.float32(1.0 / self.ps.n_workers), out=total)

    def average_models(self, params):
        """Replace every rank's model by the workers' average, reset e_s; record the spread."""
        average = self.worker_average(params, everywhere=True)
        local = float(np.linalg.norm(params - average)) if self.ps.is_worker else 0.0
        params[:] = average
        self.spread = self.ps.comm.allreduce(local, op=self.ps.MPI.MAX)
        self.server_error[:] = 0
        return params.nbytes, params.nbytes

    def after_step(self, params, step):
        self.spread = 0.0
        if self.identical_after(step):
            up, down = self.average_models(params)
            self.bytes_up_worker += up
            self.bytes_down_worker += down

    def evaluated_params(self, params, step):
        return params if self.identical_after(step) else self.worker_average(params, everywhere=False)

    def finish(self, params, step):
        return (0, 0) if self.identical_after(step) else self.average_models(params)

