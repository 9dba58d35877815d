"""signSGD with majority vote (Bernstein et al. 2019): sign up, the majority's sign down."""
from .base import PSAlgorithm
from .registry import register


@register("signsgd-mv")
class SignSGDMajorityVote(PSAlgorithm):
    up_compressor = down_compressor = "sign"

    def server(self, rows, step):
        self.up.majority_vote(rows, self.d, out=self.down_buf)
