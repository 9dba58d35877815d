"""DoubleSqueeze (Tang et al. 2019): scaled sign with error feedback on workers and server."""
from .base import ErrorFeedbackUplink, PSAlgorithm, compress_with_server_error
from .registry import register


@register("doublesqueeze")
class DoubleSqueeze(ErrorFeedbackUplink, PSAlgorithm):
    up_compressor = down_compressor = "scaled-sign"
    state_names = ("error", "server_error")
    shardable = True

    def server(self, rows, step):
        compress_with_server_error(self, self.sum_up(rows), step)
