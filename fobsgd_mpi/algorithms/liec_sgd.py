"""LIEC-SGD (arXiv 2402.11857): scaled sign both ways with local immediate error compensation.

Worker i sends C(g_i) and keeps e_i = g_i - C(g_i) (fresh, not accumulated); the server
broadcasts C(v) with v = mean_i C(g_i) + e_s and keeps e_s = v - C(v); worker i steps along
C(v) + e_i, its own error applied at once. Replicas therefore drift apart; every H iterations
(--liec-period) the models are averaged in full precision and e_s is reset.
"""
import numpy as np

from .base import PSAlgorithm, compress_with_server_error
from .registry import register


@register("liec-sgd")
class LIECSGD(PSAlgorithm):
    up_compressor = down_compressor = "scaled-sign"
    state_names = ("local_error", "server_error")

    def __init__(self, ps, d, cfg):
        super().__init__(ps, d, cfg)
        self.local_error = np.zeros(d, dtype=np.float32)
        self.period = cfg.liec_period
        self.spread = 0.0

    def encode_up(self, grad, step):
        payload = self.up.encode(grad, step, self.ps.rank, out=self.up_buf)
        self.local_error = grad - self.up.decode(payload, step, self.d)

    def idle_worker(self, step):
        self.local_error[:] = 0  # no gradient this round, so no error of its own to add

    def server(self, rows, step):
        compress_with_server_error(self, self.up.aggregate(rows, self.weights, self.d)[: self.d], step)

    def direction(self, down, step):
        out = self.down.decode(down, step, self.d, out=self.dir_buf)
        if self.ps.is_worker:
            out += self.local_error
        return out

    def identical_after(self, step):
        return (step + 1) % self.period == 0

    def after_step(self, params, step):
        """Every H steps: average the worker models in fp32 and hand the average to every rank
        (Reduce + Bcast, so all ranks get the same bits), then reset e_s."""
        self.spread = 0.0
        if not self.identical_after(step):
            return
        comm = self.ps.comm
        mine = params if self.ps.is_worker else np.zeros_like(params)
        total = np.empty_like(params)
        comm.Reduce(mine, total, op=self.ps.MPI.SUM, root=0)
        comm.Bcast(total, root=0)
        before = params.copy()
        np.multiply(total, np.float32(1.0 / self.ps.n_workers), out=params)
        local = float(np.linalg.norm(before - params)) if self.ps.is_worker else 0.0
        self.spread = comm.allreduce(local, op=self.ps.MPI.MAX)
        self.server_error = np.zeros(self.d, dtype=np.float32)
        self.bytes_up_worker += params.nbytes
        self.bytes_down_worker += params.nbytes

