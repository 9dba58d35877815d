"""Counter-based random streams, the numpy twin of native/src/stream.inl.

Every coordinate of every stream is a pure function of (seed, step, block, rank, purpose) and its
index, so all ranks draw the same Rademacher signs without sending them, and a dither can be
recomputed anywhere. The generator is SplitMix64's finalizer over key + (counter + 1) * golden.
"""
import numpy as np

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
SHARED_RANK = 0xFFFFFFFF
PURPOSE_SIGN = 1
PURPOSE_DITHER = 2
PURPOSE_QSGD = 3  # QSGD's dither
PURPOSE_ZERO_SIGN = 4  # the sign an exact zero takes (sign, scaled sign)
PURPOSE_VOTE_TIE = 5  # the side a tied majority vote takes


def mix64(z):
    """SplitMix64 finalizer on a Python int or a uint64 array."""
    if isinstance(z, np.ndarray):
        with np.errstate(over="ignore"):
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return z ^ (z >> np.uint64(31))
    z &= MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def stream_key(seed, step, block, rank, purpose):
    k = mix64(seed)
    for v in (step, block, rank, purpose):
        k = mix64(((k ^ v) + GOLDEN) & MASK)
    return k


def stream_words(key, count, start=0):
    """uint64 words start .. start + count - 1 of the stream `key`."""
    counters = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64(np.uint64(key) + counters * np.uint64(GOLDEN))


def shared_bits(seed, step, block, m, purpose):
    """Boolean mask of length m from the stream every rank shares (bit j%64 of word j//64)."""
    words = stream_words(stream_key(seed, step, block, SHARED_RANK, purpose), (m + 63) // 64)
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:m].astype(bool)


def rademacher_flips(seed, step, block, m):
    """Boolean mask of length m: True where the shared diagonal D has -1."""
    return shared_bits(seed, step, block, m, PURPOSE_SIGN)


def centred_uniforms(seed, step, block, rank, m):
    """float32 odd multiples of 2^-24 in (-1, 1), one per coordinate (two per uint64 word)."""
    words = stream_words(stream_key(seed, step, block, rank, PURPOSE_DITHER), (m + 1) // 2)
    r = words.view(np.uint32)[:m]  # little-endian: coordinate 2k is the low half of word k
    odd = ((r >> np.uint32(8)).astype(np.int32) * 2 + 1) - (1 << 24)
    return odd.astype(np.float32) * np.float32(1.0 / 16777216.0)
