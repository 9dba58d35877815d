"""EF-SGD / MEM-SGD (Karimireddy et al. 2019): scaled sign with error feedback up, fp32 mean down.

The scale is per model tensor by default, as the authors' code scales (--sign-scale vector: over
the whole flat vector; block: per --block-size block, the default on a sharded server)."""
from .base import ErrorFeedbackUplink, PSAlgorithm, per_tensor_sign_scale
from .registry import register


@register("ef-sgd")
class EFSGD(ErrorFeedbackUplink, PSAlgorithm):
    up_compressor = "scaled-sign"
    shardable = True

    @classmethod
    def compressor_defaults(cls, options, n_workers):
        return per_tensor_sign_scale(options)

    def server(self, rows, step):
        self.server_out.values[:] = self.sum_up(rows)
