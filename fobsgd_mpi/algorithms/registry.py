"""Name -> algorithm class. A new algorithm is a new module with @register("name")."""
_REGISTRY = {}


def register(name):
    def add(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def names():
    return sorted(_REGISTRY)


def get(name):
    if name not in _REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(names())}")
    return _REGISTRY[name]
