"""Name -> algorithm class."""
from ..registry import Registry

ALGORITHMS = Registry("algorithm")
register, names, get = ALGORITHMS.register, ALGORITHMS.names, ALGORITHMS.get
