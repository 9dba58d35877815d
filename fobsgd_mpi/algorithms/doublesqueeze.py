"""DoubleSqueeze (Tang et al. 2019): scaled sign with error feedback on workers and server.

The scale is per model tensor by default, as the authors' code scales (--sign-scale vector: over
the whole flat vector; block: per --block-size block). A sharded server (--servers k) needs
--sign-scale block, its default there: no single server holds a whole tensor or the whole vector.
"""
from .base import ErrorFeedbackUplink, PSAlgorithm, ServerErrorFeedback, per_tensor_sign_scale
from .registry import register


@register("doublesqueeze")
class DoubleSqueeze(ErrorFeedbackUplink, ServerErrorFeedback, PSAlgorithm):
    up_compressor = down_compressor = "scaled-sign"
    state_names = ("error", "server_error")
    shardable = True

    @classmethod
    def compressor_defaults(cls, options, n_workers):
        return per_tensor_sign_scale(options)

    def __init__(self, ps, d, options):
        super().__init__(ps, d, options)
        if self.servers > 1 and self.down.sign_scale != "block":
            raise ValueError(f"doublesqueeze with --servers above 1 needs --sign-scale block: a per-"
                             f"{self.down.sign_scale} scale spans blocks that different servers hold")

    def server(self, rows, step):
        self.compress_with_server_error(self.sum_up(rows), step)
