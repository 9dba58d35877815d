"""The alpha-beta model of one parameter-server exchange, reported beside the measured time.

t(message of B bytes over one link) = alpha + 8 B / rate. Per-node links (each rank its own
full-duplex NIC behind a non-blocking switch): the gather funnels n payloads into the server's
link, n (alpha + 8 B_up / rate) at worst serialised there; the broadcast costs the cheaper of a
binomial tree, ceil(log2 P) (alpha + 8 B_down / rate), and MPICH's scatter + ring allgather,
about 2 * 8 B_down / rate + (log2 P + P - 1) alpha. A shared medium carries every byte of every
rank: 8 (n B_up + (P - 1) B_down) / rate plus the same alpha terms. With the server split over
k ranks (--servers k, Alltoallw) the busiest per-node link carries about max(B_up, n B_up / k) in
and max(B_down, P B_down / k) out, one message per peer. Bytes that stay on a node (rank 0's own
payload with --server-also-works, a server's own shard) are not counted. alpha defaults to 50 us
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

    def exchange_seconds(self, bytes_up, bytes_down, n_senders, n_ranks, servers=1, server_sends=False):
        """Seconds of one exchange. Only bytes that leave a node count: with `server_sends`
        (--server-also-works) rank 0's own payload, and with k servers each rank's own shard,
        stay in memory (which halves the traffic at n = 2)."""
        a, bit = self.alpha_s, 8.0 / self.rate_bps
        remote = n_senders - int(server_sends)  # payloads that reach rank 0 over its link
        if servers > 1 and self.topology != "shared":
            # payloads on the busiest link: a server takes a shard from every remote sender and
            # gives one to every other rank; a rank that does not serve sends (takes) its whole
            # payload, one that serves all of it but its own shard
            k = servers
            up = max(remote / k, 1 if k < n_ranks else (k - 1) / k)
            down = max((n_ranks - 1) / k, 1 if k < n_ranks else (k - 1) / k)
            return (up * bytes_up + down * bytes_down) * bit + (n_senders + n_ranks) * a
        steps = max(1, math.ceil(math.log2(max(n_ranks, 2))))
        bcast = min(steps * (a + bytes_down * bit), 2 * bytes_down * bit + (steps + n_ranks - 1) * a)
        if self.topology == "shared":
            return (remote * bytes_up + (n_ranks - 1) * bytes_down) * bit + (remote + steps) * a
        return remote * (a + bytes_up * bit) + bcast
