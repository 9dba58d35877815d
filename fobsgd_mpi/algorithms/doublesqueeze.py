"""DoubleSqueeze (Tang et al. 2019): scaled sign with error feedback on workers and server.

The scale is per whole vector by default, as the paper scales each tensor (--sign-scale block:
per --block-size block). A sharded server (--servers k) needs --sign-scale block: the server's
scale would otherwise span the whole vector, which no single server holds.
"""
from .base import ErrorFeedbackUplink, PSAlgorithm, ServerErrorFeedback
from .registry import register


@register("doublesqueeze")
class DoubleSqueeze(ErrorFeedbackUplink, ServerErrorFeedback, PSAlgorithm):
    up_compressor = down_compressor = "scaled-sign"
    state_names = ("error", "server_error")
    shardable = True

    def __init__(self, ps, d, options):
        super().__init__(ps, d, options)
        if self.servers > 1 and self.down.sign_scale == "vector":
            raise ValueError("doublesqueeze with --servers above 1 needs --sign-scale block: a per-vector "
                             "scale spans blocks that different servers hold")

    def server(self, rows, step):
        self.compress_with_server_error(self.sum_up(rows), step)
