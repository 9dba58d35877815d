"""The parameter-server iteration every algorithm shares, with the hooks algorithms override.

One iteration, on every rank:
  1. workers encode their gradient (``encode_up``), the server gathers the payloads;
  2. the server reduces them to one payload (``server``) and broadcasts it;
  3. every rank decodes the broadcast into the update direction (``direction``).
All ranks then apply the same optimizer step, so replicas stay identical unless the algorithm
keeps per-worker state in the direction (LIEC-SGD).

Where the vectors live (arrays.py): a worker's gradient, its error memory and every rank's
direction are on options.device (numpy on the native path); the server's rows, sums and error
memory are host numpy, and so is down_buf, the payload a single server reduces into. On the
torch path each payload has a device twin: a worker encodes into up_dev and decodes down_dev.
What MPI sends from and receives into (up_wire, down_wire) are host twins (pinned for a GPU),
copied to and from the device twins, or, with options.direct_mpi (a CUDA-aware MPI), the device
twins themselves. On the native path every twin is the one host buffer.
"""
import numpy as np

from .. import arrays, compressors

SERVER_STREAM = 1 << 31  # dither stream of the server's re-quantization, distinct from any worker rank


class PSAlgorithm:
    up_compressor = "identity"
    down_compressor = "identity"
    default_lr = 0.05
    state_names = ()  # attributes (float32 arrays) that carry over between iterations
    shardable = False  # whether the server role can be split by blocks over --servers ranks
    downlinks = ("flat",)  # the --downlink choices it takes (the server's re-quantization of the sum)
    uplinks = ("plain",)  # the --uplink choices it takes, its default first (whether workers keep error feedback)

    def __init__(self, ps, d, options):
        self.ps = ps
        self.d = d
        self.device = options.device
        defaults = self.compressor_defaults(options, ps.n_workers)
        self.up = compressors.from_config(self.up_compressor, options, **defaults)
        self.down = compressors.from_config(self.down_compressor, options, **defaults)
        pinned = self.device is not None and self.device.type == "cuda"
        self.up_buf = self.up.spec(d).empty(pinned=pinned)
        self.down_buf = self.down.spec(d).empty(pinned=pinned)
        self.up_dev = self.up_buf if self.device is None else self.up.spec(d).empty(self.device)
        self.down_dev = self.down_buf if self.device is None else self.down.spec(d).empty(self.device)
        self.direct = options.direct_mpi and self.device is not None
        self.up_wire = self.up_dev if self.direct else self.up_buf
        self.dir_buf = arrays.zeros(d, self.device)
        self.weights = np.full(ps.n_workers, 1.0 / ps.n_workers, dtype=np.float32)
        self.servers = server_count(options.servers, ps.size)
        self.params = None  # the flat parameters the updates apply to (bind)
        # server_layout: the blocks this rank reduces (all of them, or its shard); server_out: the
        # payload of the down compressor it reduces them into; serves: whether this rank reduces
        if self.servers == 1:  # the server broadcasts from down_buf, where it reduced
            self.down_wire = self.down_dev if self.direct and not ps.is_server else self.down_buf
            self.uplink, self.downlink = ps.uplink(self.up_wire), ps.downlink(self.down_wire)
            blocked = isinstance(self.up, compressors.BlockCompressor)  # top-k's payload has no blocks
            self.server_layout, self.server_out = self.up.layout(d) if blocked else None, self.down_buf
            self.serves = ps.is_server
        else:
            if not self.shardable:
                raise ValueError(f"--servers {options.servers} is not available for {options.algorithm}; use --servers 1")
            self.down_wire = self.down_dev if self.direct else self.down_buf  # servers send from their shard
            shard = ps.sharded(self.servers, self.up.layout(d), self.up, self.down, self.up_wire, self.down_wire)
            self.uplink, self.downlink = shard.uplink, shard.downlink
            self.server_layout, self.server_out = shard.layout, shard.out
            self.serves = shard.serves
        # bytes one worker hands to MPI per iteration each way: the committed datatypes' sizes
        self.payload_bytes_up = ps.types(self.up.spec(d)).Get_size()
        self.payload_bytes_down = ps.types(self.down.spec(d)).Get_size()
        self.bytes_up_worker = self.bytes_down_worker = 0

    # ---------------------------------------------------------------- hooks
    @classmethod
    def compressor_defaults(cls, options, n_workers):
        """The compressor options this algorithm sets where the config leaves them unset."""
        return {}

    def encode_up(self, grad, step):
        """Encode into self.up_dev (the uplink sends it, or its host twin up_wire)."""
        self.up.encode(grad, step, self.ps.rank, out=self.up_dev)

    def server(self, rows, step):
        """Reduce the gathered rows into self.down_buf (the buffer the downlink sends)."""
        raise NotImplementedError

    def direction(self, down, step):
        return self.down.decode(down, step, self.d, out=self.dir_buf)

    def bind(self, params):
        """The flat parameter vector the optimizer updates in place (algorithms that average the
        models read and write it)."""
        self.params = params

    def after_step(self, params, step):
        """Called after the optimizer step on every rank (periodic averaging hooks in here)."""

    def wire_specs(self):
        """The payload layouts this algorithm sends (compared across ranks at start-up)."""
        return (self.up_buf.spec, self.down_buf.spec)

    def state_arrays(self):
        """The state, as host numpy arrays."""
        return {name: arrays.host(getattr(self, name)) for name in self.state_names}

    def load_state(self, saved):
        for name in self.state_names:
            if name in saved:
                setattr(self, name, arrays.like(getattr(self, name), saved[name]))

    def identical_after(self, step):
        """Whether every rank's model must be bit-identical after this step's update."""
        return True

    def evaluated_params(self, params, step):
        """The parameters the server evaluates after this step (collective: every rank calls it)."""
        return params

    def finish(self, params, step):
        """Called on every rank when the run ends after `step`; returns the (up, down) bytes per
        worker of any last exchange it made (e.g. a final model average)."""
        return 0, 0

    # ---------------------------------------------------------------- shared pieces
    def sum_up(self, rows):
        """Weighted sum of the gathered one-bit rows over the coordinates this rank serves."""
        return self.up.aggregate(rows, self.weights, self.server_layout)[: self.server_layout.d]

    def mean_up(self, rows, step):
        """Mean of the decoded worker payloads (original domain, length d)."""
        out = np.zeros(self.d, dtype=np.float32)
        spec = self.up.spec(self.d)
        for i, row in enumerate(rows):
            self.up.decode(spec.view(row), step, self.d, out=out, weight=self.weights[i], accumulate=True)
        return out

    def idle_worker(self, step):
        """Called instead of encode_up on a worker left out of this round (--participation)."""

    def exchange(self, grad, step, timer, participants=None):
        """One iteration; `participants` (default: all workers) are the ranks that send this round."""
        ps = self.ps
        everyone = participants is None or len(participants) == ps.n_workers
        sends = ps.is_worker and (everyone or ps.rank in participants)
        with timer("encode"):
            if sends:
                self.encode_up(grad, step)
            elif ps.is_worker:
                self.idle_worker(step)
        with timer("comm"):
            if sends and self.up_wire is not self.up_dev:
                self.up_wire.copy_from(self.up_dev)
            elif self.direct:  # MPI reads up_dev and writes down_dev: the device's work on them is done
                arrays.synchronize(self.up_dev.buffer)
            rows = self.uplink.run() if everyone else self.uplink.run(participants)
        with timer("server"):
            if rows is not None:  # this rank serves (all blocks, or its shard of them)
                self.weights = np.full(len(rows), 1.0 / len(rows), dtype=np.float32)
                self.server(rows, step)
        with timer("comm"):
            self.downlink.run()
            if self.down_dev is not self.down_wire:
                self.down_dev.copy_from(self.down_wire)
        self.bytes_up_worker, self.bytes_down_worker = self.payload_bytes_up, self.payload_bytes_down
        with timer("decode"):
            return self.direction(self.down_dev, step)


def server_count(servers, size):
    """--servers as a number of server ranks: "all" is every rank, else 1..size."""
    k = size if str(servers) == "all" else int(servers)
    if not 1 <= k <= size:
        raise ValueError(f"--servers must be 1..{size} (the number of ranks) or all, got {servers}")
    return k


def per_tensor_sign_scale(options):
    """EF-SGD's and DoubleSqueeze's scale where --sign-scale is unset: per model tensor, as their
    reference code scales, or per block on a sharded server (tensor scales do not split by blocks)."""
    return {"sign_scale": "tensor" if str(options.servers) == "1" else "block"}


class ErrorFeedbackUplink:
    """Worker side of error feedback: send C(g + e), keep e = g + e - C(g + e) (MEM-SGD). Always on
    unless the algorithm also takes --uplink plain (its `uplinks`), then only with --uplink feedback."""

    state_names = ("error",)
    uplinks = ("feedback",)

    def __init__(self, ps, d, options):
        super().__init__(ps, d, options)
        feedback = (options.uplink or self.uplinks[0]) == "feedback"
        self.error = arrays.zeros(d if feedback and ps.is_worker else 0, self.device)

    def encode_up(self, grad, step):
        if not len(self.error):
            return super().encode_up(grad, step)
        corrected = grad + self.error
        payload = self.up.encode(corrected, step, self.ps.rank, out=self.up_dev)
        self.error = corrected - self.up.decode(payload, step, self.d)


class ServerErrorFeedback:
    """Server side of bidirectional error feedback: send C(v + e_s), keep e_s = v + e_s - C(v + e_s)
    over the coordinates this rank serves (server_layout)."""

    state_names = ("server_error",)

    def __init__(self, ps, d, options):
        super().__init__(ps, d, options)
        self.server_error = np.zeros(self.server_layout.d if self.serves else 0, dtype=np.float32)

    def compress_with_server_error(self, v, step):
        v = v + self.server_error
        down = self.down.encode(v, step, SERVER_STREAM, out=self.server_out, layout=self.server_layout)
        self.server_error = v - self.down.decode(down, step, len(v))
