"""Name -> class registries (compressors, algorithms): adding one is a new module with @register."""


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._classes = {}

    def register(self, name):
        def add(cls):
            cls.name = name
            self._classes[name] = cls
            return cls

        return add

    def names(self):
        return sorted(self._classes)

    def get(self, name):
        if name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return self._classes[name]
