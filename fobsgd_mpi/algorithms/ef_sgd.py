"""EF-SGD / MEM-SGD: scaled sign with error feedback up, fp32 mean down."""
from .base import ErrorFeedbackUplink, PSAlgorithm
from .registry import register


@register("ef-sgd")
class EFSGD(ErrorFeedbackUplink, PSAlgorithm):
    up_compressor = "scaled-sign"

    def server(self, rows, step):
        self.down_buf.values[:] = self.up.aggregate(rows, self.weights, self.d)[: self.d]
