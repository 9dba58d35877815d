"""EF-SGD / MEM-SGD (Karimireddy et al. 2019): scaled sign with error feedback up, fp32 mean down.

The scale is per whole vector by default, as the paper scales each tensor (--sign-scale block:
per --block-size block)."""
from .base import ErrorFeedbackUplink, PSAlgorithm
from .registry import register


@register("ef-sgd")
class EFSGD(ErrorFeedbackUplink, PSAlgorithm):
    up_compressor = "scaled-sign"
    shardable = True

    def server(self, rows, step):
        self.server_out.values[:] = self.sum_up(rows)
