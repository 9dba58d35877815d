"""The alpha-beta model of one parameter-server exchange, reported beside the measured time.

t(message of B bytes over one link) = alpha + 8 B / rate. Per-node links (each rank its own
full-duplex NIC behind a non-blocking switch): the gather funnels n payloads into the server's
link, n (alpha + 8 B_up / rate) at worst serialised there; the broadcast costs the cheaper of a
binomial tree, ceil(log2 P) (alpha + 8 B_down / rate), and MPICH's scatter + ring allgather,
about 2 * 8 B_down / rate + (log2 P + P - 1) alpha. A shared medium carries every byte of every
rank: 8 (n B_up + (P - 1) B_down) / rate plus the same alpha terms. With the server split over
k ranks (--servers k, Alltoallw) the busiest per-node link carries max(B_up, n B_up / k) in and
max(B_down, P B_down / k) out, one message per peer. alpha defaults to 50 us
(override with "alpha_s" in the profile); the launcher passes the profile in $FOBSGD_NETWORK.
"""
import json
import math
import os
from dataclasses import dataclass


@dataclass
class NetworkModel:
    topology: str
    rate_bps: float
    alpha_s: float = 50e-6
    profile: dict = None

    @classmethod
    def from_environment(cls):
        raw = os.environ.get("FOBSGD_NETWORK")
        if not raw:
            return None
        profile = json.loads(raw)
        if not profile.get("rate_bps"):
            return None
        return cls(profile["topology"], float(profile["rate_bps"]), float(profile.get("alpha_s", 50e-6)), profile)

    def exchange_seconds(self, bytes_up, bytes_down, n_senders, n_ranks, servers=1):
        a, bit = self.alpha_s, 8.0 / self.rate_bps
        if servers > 1 and self.topology != "shared":
            return (max(bytes_up, n_senders * bytes_up / servers) + max(bytes_down, n_ranks * bytes_down / servers)) \
                * bit + (n_senders + n_ranks) * a
        steps = max(1, math.ceil(math.log2(max(n_ranks, 2))))
        bcast = min(steps * (a + bytes_down * bit), 2 * bytes_down * bit + (steps + n_ranks - 1) * a)
        if self.topology == "shared":
            return (n_senders * bytes_up + (n_ranks - 1) * bytes_down) * bit + (n_senders + steps) * a
        return n_senders * (a + bytes_up * bit) + bcast
