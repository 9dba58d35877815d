"""What the training loop trains on, whatever the data set: the size of the training set, the input
shape and classes, each worker's minibatch sampler, and rank 0's test-set evaluation.

Array sets (data.py: the built-ins and npz:PATH) are loaded by rank 0, which scatters each worker
its shard (data.distribute). Image sets (image_data.py) are opened by every worker from the file
system: rank 0 decides the shards from the labels and sends each worker only its index list.
"""
import functools

import torch

from . import data, image_data, models
from .errors import UsageError

DATASET_FORMS = f"{', '.join(data.DATASETS + image_data.IMAGE_DATASETS)}, npz:PATH or package.module:factory"


def is_image_set(name):
    return name in image_data.IMAGE_DATASETS or (not name.startswith("npz:") and image_data.is_factory(name))


def check_dataset_name(name):
    """ValueError unless `name` names a data set (the rule of --dataset; files are checked later)."""
    if name in data.DATASETS or name in image_data.IMAGE_DATASETS or (name.startswith("npz:") and name[4:]):
        return
    if not image_data.is_factory(name):
        raise ValueError(f"must be one of {DATASET_FORMS}, got {name!r}")
    models.find_factory(name)


def shape_of(cfg):
    """(input shape, outputs) of an npz or image data set, read without loading its inputs; a
    UsageError when its files are missing or not in its format."""
    if cfg.dataset.startswith("npz:"):
        return data.check_npz(cfg.dataset[4:])
    return image_data.describe(cfg)


class TensorBatchSampler(data.BatchSampler):
    def next(self):
        x, y = super().next()
        return torch.from_numpy(x), torch.from_numpy(y)


class ArrayWorkload:
    """A shard of an array set on each worker (x_train, y_train) and the test set on rank 0."""

    def __init__(self, ds, n_train):
        self.ds, self.n_train = ds, n_train
        self.input_shape, self.n_classes = ds.x_train.shape[1:], ds.n_classes
        self.n_outputs = ds.n_classes or ds.y_train.shape[1]

    def sampler(self, batch_size, seed):
        return TensorBatchSampler(self.ds.x_train, self.ds.y_train, batch_size, seed)

    def evaluate(self, module, loss_fn):
        return models.evaluate(module, self.ds.x_test, self.ds.y_test, loss_fn, self.n_classes)


class ImageWorkload:
    """A worker's Shard of an image set and, on rank 0, the test Dataset."""

    def __init__(self, shard, test, n_train, input_shape, n_classes, loader_workers):
        self.shard, self.test, self.n_train = shard, test, n_train
        self.input_shape, self.n_classes = input_shape, n_classes
        self.n_outputs, self.loader_workers = n_classes, loader_workers

    def sampler(self, batch_size, seed):
        return image_data.ShardSampler(self.shard, batch_size, seed, self.loader_workers)

    def evaluate(self, module, loss_fn):
        return models.evaluate_dataset(module, self.test, loss_fn, loader_workers=self.loader_workers)


def distribute(comm, cfg, workers, root=0):
    """Collective: each of `workers` gets its shard of cfg.dataset (IID or Dirichlet by
    cfg.partition), rank `root` the test set. Raises UsageError on every rank when the data cannot
    be read or a worker's shard holds fewer than cfg.batch_size samples."""
    if not is_image_set(cfg.dataset):
        ds, n_train = data.distribute(comm, cfg.dataset, cfg.seed, workers, cfg.partition, cfg.alpha, root)
        check_batch_size(cfg.batch_size, dict(zip(range(comm.Get_size()), comm.allgather(len(ds.x_train)))),
                         workers, n_train)
        return ArrayWorkload(ds, n_train)
    rank = comm.Get_rank()
    layout = parts = train = test = problem = None
    if rank == root:
        try:
            train, test = image_data.open_split(cfg, "train"), image_data.open_split(cfg, "test")
            labels = image_data.labels_of(train)
            parts = data.shards(labels, len(workers), cfg.seed, cfg.partition, cfg.alpha)
            layout = {"n_train": len(train), "input_shape": tuple(train[0][0].shape),
                      "n_classes": image_data.describe(cfg)[1], "sizes": dict(zip(workers, map(len, parts)))}
        except UsageError as exc:
            problem = str(exc)
    layout, problem = comm.bcast((layout, problem), root=root)
    if problem:
        raise UsageError(problem)
    check_batch_size(cfg.batch_size, layout["sizes"], workers, layout["n_train"])
    by_rank = [None] * comm.Get_size()
    for r, part in zip(workers, parts or ()):
        by_rank[r] = part
    mine = comm.scatter(by_rank if rank == root else None, root=root)
    shard = problem = None
    if mine is not None:
        try:
            dataset = train if rank == root else image_data.open_split(cfg, "train")
            shard = image_data.Shard(dataset, mine, cfg.seed, image_data.augments(cfg.dataset))
        except UsageError as exc:
            problem = f"rank {rank}: {exc}"
    problems = [p for p in comm.allgather(problem) if p]
    if problems:
        raise UsageError(problems[0])
    return ImageWorkload(shard, test, layout["n_train"], layout["input_shape"], layout["n_classes"],
                         cfg.loader_workers)


def check_batch_size(batch_size, sizes, workers, n_train):
    """UsageError (on every rank alike) when a worker's shard is smaller than one batch."""
    smallest = min(workers, key=lambda r: sizes[r])
    if batch_size > sizes[smallest]:
        raise UsageError(f"--batch-size {batch_size} exceeds the {sizes[smallest]} training samples of worker rank "
                         f"{smallest} ({len(workers)} workers share {n_train}); lower --batch-size or use fewer "
                         "workers")


def check_slow_ranks(slow, workers):
    """UsageError when --slow-ranks ({rank: factor}) names a rank that is not one of `workers`."""
    unknown = sorted(set(slow) - set(workers))
    if unknown:
        raise UsageError(f"--slow-ranks names rank(s) {unknown}, which are not workers (workers: "
                         f"{workers[0]}..{workers[-1]})")


def check_ranks(cfg, n_ranks):
    """UsageError for what only the job's number of ranks decides, as the job itself would raise it:
    --servers, --slow-ranks, and a worker's shard of an array data set smaller than a batch (image
    sets are checked when the job opens them). For a sweep, before its tasks are queued."""
    from .algorithms.base import server_count
    from .config import slow_ranks
    from .transport import worker_ranks
    workers = worker_ranks(n_ranks, cfg.server_also_works)
    try:
        server_count(cfg.servers, n_ranks)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    check_slow_ranks(slow_ranks(cfg.slow_ranks), workers)
    if not is_image_set(cfg.dataset):
        labels = _train_labels(cfg.dataset, cfg.seed)
        sizes = [len(part) for part in data.shards(labels, len(workers), cfg.seed, cfg.partition, cfg.alpha)]
        check_batch_size(cfg.batch_size, dict(zip(workers, sizes)), workers, len(labels))


@functools.lru_cache(maxsize=8)
def _train_labels(dataset, seed):
    return data.load(dataset, seed).y_train
