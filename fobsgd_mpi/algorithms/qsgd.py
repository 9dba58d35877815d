"""QSGD both ways: workers quantize, the server averages the decoded values and re-quantizes."""
from .base import SERVER_STREAM, PSAlgorithm
from .registry import register


@register("qsgd")
class QSGDAlgorithm(PSAlgorithm):
    up_compressor = down_compressor = "qsgd"

    def server(self, rows, step):
        self.down.encode(self.mean_up(rows, step), step, SERVER_STREAM, out=self.down_buf)
