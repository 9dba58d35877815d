"""signSGD with majority vote (Bernstein et al. 2019): sign up, the majority's sign down.

Zeros and tied votes take a seeded random sign shared by every rank (--sign-ties; compressors/sign.py)."""
from .base import PSAlgorithm
from .registry import register


@register("signsgd-mv")
class SignSGDMajorityVote(PSAlgorithm):
    up_compressor = down_compressor = "sign"
    default_lr = 0.001  # the direction is +-1 in every coordinate: 0.05 wrecked the mlp (measured 0.098 accuracy)
    shardable = True

    def server(self, rows, step):
        self.up.majority_vote(rows, step, self.server_layout, out=self.server_out)
