"""Top-k sparsification with error feedback up, fp32 mean down."""
from .base import ErrorFeedbackUplink, PSAlgorithm
from .registry import register


@register("topk-ef")
class TopKEF(ErrorFeedbackUplink, PSAlgorithm):
    up_compressor = "topk"

    def server(self, rows, step):
        self.down_buf.values[:] = self.mean_up(rows, step)
