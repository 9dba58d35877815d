"""The typed options every algorithm and its compressors take (instead of a run's whole config)."""
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class AlgorithmOptions:
    """Field names are the config keys (config.TRAIN) they come from; None: the algorithm's or
    compressor's own default."""

    algorithm: str = "fo-sgd"
    servers: str = "1"
    seed: int = 0
    block_size: int = None
    eta: float = 1e-2
    lambda_rule: str = "min"
    server_scale: str = None
    worker_scale: str = None
    sign_ties: str = "random"
    sign_scale: str = None
    qsgd_levels: int = 15
    topk_ratio: float = 0.01
    downlink: str = "flat"
    uplink: str = None
    liec_period: int = 32
    # whether the optimizer keeps state between steps (LIEC-SGD's replicas then stay apart)
    stateful_optimizer: bool = True
    # the lengths of the model's tensors in the flat vector, in order (models.FlatModel); None: one tensor
    tensor_sizes: tuple = None
    # where the workers' vectors live: None (numpy, the native codec) or a torch.device (arrays.py)
    device: object = None
    # whether MPI takes the payload tensors on `device` as they are (a CUDA-aware MPI), not host twins
    direct_mpi: bool = False

    @classmethod
    def from_config(cls, cfg, stateful_optimizer, tensor_sizes=None, device=None, direct_mpi=False):
        names = [f.name for f in fields(cls)
                 if f.name not in ("stateful_optimizer", "tensor_sizes", "device", "direct_mpi")]
        return cls(**{name: getattr(cfg, name) for name in names}, stateful_optimizer=stateful_optimizer,
                   tensor_sizes=tensor_sizes, device=device, direct_mpi=direct_mpi)
