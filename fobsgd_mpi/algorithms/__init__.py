"""Training algorithms: each a short module composing compressors with the parameter-server
exchange (base.PSAlgorithm), registered by name."""
from . import doublesqueeze, ef_sgd, fo_sgd, liec_sgd, qsgd, sgd, signsgd_mv, topk_ef  # noqa: F401
from .registry import get, names  # noqa: F401
