"""Name -> compressor; get() builds one with its options, from_config() with a run's config."""
from ..registry import Registry

COMPRESSORS = Registry("compressor")
register, names = COMPRESSORS.register, COMPRESSORS.names


def get(name, **options):
    """A compressor by name, e.g. get("fo1bit", eta=1e-2, block_size=2**16)."""
    cls = COMPRESSORS.get(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"bad options for compressor {name!r}: {exc}") from None


def from_config(name, cfg, **defaults):
    """The compressor `name` with the options a run's config sets (each compressor's Options);
    `defaults` fill the options the config leaves unset."""
    return COMPRESSORS.get(name).from_config(cfg, **defaults)
