"""Block layout of a flat vector of length d (SPEC §1.1).

Full blocks of `max_block` coordinates, then the tail split by its binary expansion into smaller
power-of-two blocks down to `min_block`; only the last block is zero-padded, so padding stays
below `min_block` (189 coordinates at d = 1,000,003 with the defaults, instead of up to half a
block when the tail is padded to the next power of two).
"""
from dataclasses import dataclass, field

import numpy as np

DEFAULT_MAX_BLOCK = 1 << 16
DEFAULT_MIN_BLOCK = 256


def _is_power_of_two(n):
    return isinstance(n, (int, np.integer)) and n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class BlockLayout:
    d: int
    max_block: int = DEFAULT_MAX_BLOCK
    min_block: int = DEFAULT_MIN_BLOCK
    offsets: np.ndarray = field(init=False, repr=False, compare=False)
    log_sizes: np.ndarray = field(init=False, repr=False, compare=False)
    block_ids: np.ndarray = field(init=False, repr=False, compare=False)  # keys of the blocks' random streams

    def __post_init__(self):
        if not isinstance(self.d, (int, np.integer)) or self.d < 1:
            raise ValueError(f"vector length must be a positive integer, got {self.d!r}")
        for name in ("max_block", "min_block"):
            v = getattr(self, name)
            if not _is_power_of_two(v) or v < 64:
                raise ValueError(f"{name} must be a power of two >= 64, got {v!r}")
        if self.min_block > self.max_block:
            raise ValueError(f"min_block {self.min_block} exceeds max_block {self.max_block}")
        sizes = [self.max_block] * (self.d // self.max_block)
        rest = self.d % self.max_block
        size = self.max_block // 2
        while rest >= self.min_block:
            if rest >= size:
                sizes.append(size)
                rest -= size
            size //= 2
        if rest:
            sizes.append(self.min_block)
        sizes = np.array(sizes, dtype=np.int64)
        object.__setattr__(self, "offsets", np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64))
        object.__setattr__(self, "log_sizes", np.log2(sizes).astype(np.int32))
        object.__setattr__(self, "block_ids", np.arange(len(sizes), dtype=np.int64))

    @property
    def n_blocks(self):
        return len(self.offsets)

    @property
    def sizes(self):
        return np.left_shift(1, self.log_sizes.astype(np.int64))

    @property
    def padded(self):
        return int(self.offsets[-1] + self.sizes[-1])

    @property
    def n_words(self):
        return self.padded // 64

    @property
    def valid(self):
        """Real (unpadded) coordinates per block."""
        return np.clip(self.d - self.offsets, 0, self.sizes)

    def flat(self):
        """The same blocks with every coordinate real: the encoded domain of a rotated vector,
        where padding has been mixed into the whole block."""
        return self._with(self.offsets, self.log_sizes, self.block_ids)

    def subset(self, blocks):
        """The given blocks (ascending indices into this layout) packed back to back, each keeping
        its block id, so a kernel draws the same random streams for it as on the whole vector: the
        layout of one server's shard (SPEC §1.1). Only the last block of a layout is padded, so
        the shard's length d drops that padding when it holds that block, and the shard has the
        block sizes BlockLayout(shard.d) would give (a property the tests check)."""
        blocks = np.asarray(blocks, dtype=np.int64)
        if blocks.size == 0:
            raise ValueError("a layout subset needs at least one block")
        sizes = self.sizes[blocks]
        padding = self.padded - self.d if blocks[-1] == self.n_blocks - 1 else 0
        return self._with(np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64), self.log_sizes[blocks],
                          self.block_ids[blocks], int(sizes.sum()) - padding)

    def _with(self, offsets, log_sizes, block_ids, d=None):
        out = object.__new__(BlockLayout)
        padded = int(offsets[-1] + (1 << int(log_sizes[-1])))
        for name, value in (("d", padded if d is None else d), ("max_block", self.max_block),
                            ("min_block", self.min_block), ("offsets", offsets), ("log_sizes", log_sizes),
                            ("block_ids", block_ids)):
            object.__setattr__(out, name, value)
        return out

    def blocks(self):
        """(index, offset, size, valid) for each block."""
        for b, (off, m, v) in enumerate(zip(self.offsets.tolist(), self.sizes.tolist(), self.valid.tolist())):
            yield b, off, m, v
