"""EF-SGD / MEM-SGD: scaled sign with error feedback up, fp32 mean down."""
from .base import ErrorFeedbackUplink, PSAlgorithm
from .registry import register


@register("ef-sgd")
class EFSGD(ErrorFeedbackUplink, PSAlgorithm):
    up_compressor = "scaled-sign"
    shardable = True

    def server(self, rows, step):
        self.server_out.values[:] = self.sum_up(rows)
