"""Full-precision parameter-server SGD: fp32 gather, mean, fp32 broadcast (the reference)."""
import numpy as np

from .base import PSAlgorithm
from .registry import register


@register("sgd")
class SGD(PSAlgorithm):
    def server(self, rows, step):
        values = rows.view(np.float32)
        np.mean(values, axis=0, dtype=np.float32, out=self.down_buf.values)
