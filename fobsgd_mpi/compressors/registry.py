"""Name -> compressor class. A new compressor is a new module with @register("name")."""
_REGISTRY = {}


def register(name):
    def add(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def names():
    return sorted(_REGISTRY)


def get(name, **options):
    """A compressor by name, e.g. get("fo1bit", eta=1e-2, block_size=2**16)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown compressor {name!r}; choose one of {', '.join(names())}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as exc:
        raise ValueError(f"bad options for compressor {name!r}: {exc}") from None
