"""What every compressor shares: the payload (one contiguous byte buffer with named numpy views,
so MPI sends it without a copy), the encode / decode interface and typed options.

A compressor is stateless between calls: error memories belong to the algorithms that use them.
"""
from dataclasses import dataclass, field, fields
from functools import lru_cache

import numpy as np

from .. import arrays
from ..layout import DEFAULT_MAX_BLOCK, DEFAULT_MIN_BLOCK, BlockLayout
from ..native import backend as kernel_backend
from ..native import backend_for


@dataclass(frozen=True)
class PayloadSpec:
    """Fields (name, dtype, count) back to back, each aligned to its own item size; nbytes is
    exactly what travels (the fields in use put wider items first, so nothing is padding)."""

    fields: tuple

    @property
    def offsets(self):
        out, pos = {}, 0
        for name, dtype, count in self.fields:
            size = np.dtype(dtype).itemsize
            pos = -(-pos // size) * size
            out[name] = pos
            pos += size * count
        return out

    @property
    def nbytes(self):
        name, dtype, count = self.fields[-1]
        return self.offsets[name] + np.dtype(dtype).itemsize * count

    def empty(self, device=None, pinned=False):
        """A zeroed Payload: numpy (device None; `pinned`: in page-locked memory) or on a torch device."""
        return Payload(self, arrays.empty_bytes(self.nbytes, device, pinned))

    def view(self, buffer):
        """A Payload over an existing uint8 buffer (e.g. one row of a gather), no copy."""
        if buffer.dtype != np.uint8 or buffer.ndim != 1 or buffer.size != self.nbytes:
            raise ValueError(f"payload buffer must be {self.nbytes} uint8 bytes, got {buffer.dtype} x {buffer.size}")
        return Payload(self, buffer)


class Payload:
    """Encoded vector: `buffer` (uint8, numpy or a torch tensor) is what travels; fields (e.g.
    `bits`, `scales`) are views."""

    __slots__ = ("spec", "buffer", "__dict__")

    def __init__(self, spec, buffer):
        self.spec = spec
        self.buffer = buffer
        for (name, dtype, count), off in zip(spec.fields, spec.offsets.values()):
            setattr(self, name, arrays.field_view(buffer, off, dtype, count))

    @property
    def nbytes(self):
        return self.spec.nbytes

    def copy_from(self, other):
        """This payload's bytes = other's (same spec; host and device buffers alike)."""
        arrays.assign(self.buffer, other.buffer)


def flag(name):
    """Field metadata: the config key an option is read from (None: not configurable)."""
    return {"flag": name}


@dataclass(frozen=True)
class Options:
    """The typed options of a compressor; each compressor declares its own subclass, and
    Compressor.from_config fills it from a run's config by field name (or the field's `flag`)."""

    backend: str = field(default="native", metadata=flag(None))
    n_threads: int = field(default=1, metadata=flag(None))


@dataclass(frozen=True)
class BlockOptions(Options):
    """Options of a compressor that works block by block (BlockLayout)."""

    block_size: int = DEFAULT_MAX_BLOCK
    min_block: int = field(default=DEFAULT_MIN_BLOCK, metadata=flag(None))

    def __post_init__(self):
        BlockLayout(1, self.block_size, min(self.min_block, self.block_size))  # validates the sizes now


def check_choice(options, name, choices):
    """ValueError unless the option `name` of an Options dataclass is one of `choices`."""
    value = getattr(options, name)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


class Compressor:
    """encode(x, step, rank) -> Payload; decode(payload, step) -> x_hat (float32, length d).

    Subclasses set `name`, `bits_up` (declared bits per coordinate, scales included, for
    reports; the tests measure the truth from payload_nbytes), `Options` (a dataclass of their
    typed options, copied onto the instance as attributes) and implement `spec`, `_encode`,
    `_decode`.
    """

    name = ""
    Options = Options

    def __init__(self, **options):
        opts = self.Options(**options)
        for f in fields(opts):
            setattr(self, f.name, getattr(opts, f.name))
        self.kernels = kernel_backend(self.backend)
        self.n_threads = int(self.n_threads)

    def kernels_for(self, x):
        """The kernels for x: this compressor's backend for numpy arrays, torch_codec for tensors."""
        return kernel_backend(backend_for(x)) if arrays.is_tensor(x) else self.kernels

    def options(self):
        """The options this compressor runs with (its Options' fields), e.g. for a run's record."""
        return {f.name: getattr(self, f.name) for f in fields(self.Options)}

    @classmethod
    def from_config(cls, cfg, **defaults):
        """This compressor with the options `cfg` (a run's config) sets; where it leaves one unset
        (None), `defaults` (an algorithm's own) or else the Options default. A block size given to
        a compressor without blocks is refused."""
        taken = {f.name: f.metadata.get("flag", f.name) for f in fields(cls.Options)}
        if "block_size" not in taken and getattr(cfg, "block_size", None) is not None:
            raise ValueError(f"{cls.name} works on the whole vector, so --block-size does not apply to it")
        values = {name: getattr(cfg, key, None) for name, key in taken.items() if key is not None}
        values = {name: defaults.get(name) if v is None else v for name, v in values.items()}
        return cls(**{name: v for name, v in values.items() if v is not None})

    def spec(self, d):
        raise NotImplementedError

    def spec_of(self, layout):
        """The payload of a vector with this layout (a server's shard, BlockLayout.subset)."""
        return self.spec(layout.d)

    def block_ranges(self, layout, blocks):
        """Byte ranges (offset, length) that hold these blocks in a payload of the whole vector
        (`layout`), in the order spec_of(layout.subset(blocks)) holds them: what the sharded
        server sends each server. Only payloads that split by blocks have them."""
        raise ValueError(f"{self.name} payloads do not split by blocks, so they cannot be sharded")

    def payload_nbytes(self, d):
        return self.spec(d).nbytes

    def bits_per_coordinate(self, d):
        return 8 * self.payload_nbytes(d) / d

    def encode(self, x, step, rank, out=None):
        x = _as_gradient(x)
        payload = out if out is not None else self.spec(len(x)).empty(arrays.device_of(x))
        self._encode(x, int(step), int(rank), payload)
        return payload

    def decode(self, payload, step, d, out=None, weight=1.0, accumulate=False):
        """x_hat of length d (where the payload lives); with `out`, writes (or with `accumulate`
        adds) weight * x_hat there."""
        if out is None:
            out = arrays.zeros(d, arrays.device_of(payload.buffer))
            accumulate = False
        self._decode(payload, int(step), d, out, float(weight), bool(accumulate))
        return out


class BlockCompressor(Compressor):
    """A compressor over the blocks of a BlockLayout (block_size, min_block); its `_encode` also
    takes the vector's layout."""

    Options = BlockOptions

    def __init__(self, **options):
        super().__init__(**options)
        self.min_block = min(self.min_block, self.block_size)

    @lru_cache(maxsize=8)
    def layout(self, d):
        return BlockLayout(int(d), self.block_size, self.min_block)

    def layout_of(self, d):
        """`d` as a BlockLayout: a vector length gives this compressor's layout, a layout (a
        server's shard, BlockLayout.subset) is taken as it is."""
        return d if isinstance(d, BlockLayout) else self.layout(d)

    def encode(self, x, step, rank, out=None, layout=None):
        """As Compressor.encode; `layout` is x's BlockLayout when x is a server's shard (its blocks
        then draw their random streams under their ids in the whole vector)."""
        x = _as_gradient(x)
        lay = self.layout_of(len(x) if layout is None else layout)
        if lay.d != len(x):
            raise ValueError(f"layout of {lay.d} coordinates for a vector of {len(x)}")
        payload = out if out is not None else self.spec_of(lay).empty(arrays.device_of(x))
        self._encode(x, int(step), int(rank), payload, lay)
        return payload


def _as_gradient(x):
    if arrays.is_tensor(x):
        if x.dim() != 1 or str(x.dtype) != "torch.float32" or not x.is_contiguous() or x.numel() == 0:
            raise ValueError(f"encode needs a non-empty 1-D contiguous float32 tensor, got {x.dtype} {tuple(x.shape)}")
        return x
    if not isinstance(x, np.ndarray) or x.ndim != 1:
        raise ValueError("encode needs a 1-D numpy array or torch tensor (flatten the gradient first)")
    if x.dtype != np.float32:
        raise ValueError(f"encode needs float32, got {x.dtype}; convert with x.astype(np.float32)")
    if not x.flags.c_contiguous:
        raise ValueError("encode needs a contiguous array (np.ascontiguousarray)")
    if x.size == 0:
        raise ValueError("encode needs a non-empty vector")
    return x
