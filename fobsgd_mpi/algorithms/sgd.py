"""Full-precision parameter-server SGD: fp32 gather, mean, fp32 broadcast (the reference)."""
import numpy as np

from .base import PSAlgorithm
from .registry import register


@register("sgd")
class SGD(PSAlgorithm):
    shardable = True

    def server(self, rows, step):
        np.mean(rows.view(np.float32), axis=0, dtype=np.float32, out=self.server_out.values)
