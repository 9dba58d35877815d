"""Image data sets that every rank opens itself from a (shared) file system, as torch Datasets of
(float32 image tensor (channels, height, width), int label) pairs, and one worker's minibatches of
its shard of one.

cifar10 / cifar100 read the python pickle batches as distributed (cifar-10-batches-py,
cifar-100-python) from --data-dir; imagefolder reads --data-dir/train and --data-dir/val, one
folder of images per class, resized and center-cropped to --image-size; synthetic-images are
Horovod-style random images of --image-size and --image-classes, for throughput runs; and
`package.module:factory` is a callable returning the user's own (train, test) Datasets.

Nothing downloads. Pixels are scaled to [0, 1], then to (p - 0.5) / 0.25. Training batches of
cifar and imagefolder get the standard augmentation, a random crop with 4 pixels of padding and a
horizontal flip, drawn from (seed, epoch, sample index) so that a resumed run or a replica sees
the same images.
"""
import os
import pickle

import numpy as np
import torch

from .data import BatchOrder
from .errors import UsageError

IMAGE_DATASETS = ("cifar10", "cifar100", "imagefolder", "synthetic-images")
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25
CROP_PADDING = 4
SYNTHETIC_SIZES = {"train": 8192, "test": 512}
# name: (the folder as extracted, training files, test files, label key, classes)
CIFAR = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
         "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100)}


def is_factory(name):
    module, _, attr = name.partition(":")
    return bool(module and attr) and all(part.isidentifier() for part in module.split(".")) and attr.isidentifier()


def augments(name):
    return name in ("cifar10", "cifar100", "imagefolder")


class ImageArray(torch.utils.data.Dataset):
    """uint8 images (n, channels, height, width) in memory, with their labels."""

    def __init__(self, images, labels):
        self.images, self.targets = images, labels

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        pixels = torch.from_numpy(self.images[index]).float() / 255
        return (pixels - PIXEL_MEAN) / PIXEL_STD, int(self.targets[index])


class SyntheticImages(torch.utils.data.Dataset):
    """Random normal images, each drawn from (seed, split, index), and random labels."""

    def __init__(self, n, shape, n_classes, seed, split):
        self.shape, self.key = shape, (seed, split == "test")
        self.targets = np.random.default_rng((*self.key, 0x1AB)).integers(0, n_classes, n)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        pixels = np.random.default_rng((*self.key, index)).standard_normal(self.shape, dtype=np.float32)
        return torch.from_numpy(pixels), int(self.targets[index])


def cifar_folder(name, data_dir):
    """The folder holding the pickle batches: --data-dir itself or the folder extracted in it."""
    extracted, train, test, _, _ = CIFAR[name]
    for folder in (data_dir, os.path.join(data_dir, extracted)):
        if all(os.path.isfile(os.path.join(folder, f)) for f in train + test):
            return folder
    raise UsageError(f"--data-dir {data_dir} holds no {name} python batches ({', '.join(train + test)}, there or "
                     f"in {extracted}/); extract the python version of the data set there")


def load_cifar(name, data_dir, split):
    folder = cifar_folder(name, data_dir)
    _, train, test, label_key, n_classes = CIFAR[name]
    images, labels = [], []
    for file in train if split == "train" else test:
        path = os.path.join(folder, file)
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            pixels, batch_labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[label_key])
        except (OSError, pickle.UnpicklingError, EOFError, TypeError, KeyError, ValueError) as exc:
            raise UsageError(f"{path} is not a {name} python batch ({type(exc).__name__}: {exc})") from None
        if pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32 or len(batch_labels) != len(pixels) \
                or not ((0 <= batch_labels) & (batch_labels < n_classes)).all():
            raise UsageError(f"{path} is not a {name} batch: it holds data {pixels.shape} and {len(batch_labels)} "
                             f"labels, expected (n, 3072) uint8 rows and n labels in 0..{n_classes - 1}")
        images.append(pixels.reshape(-1, 3, 32, 32))
        labels.append(batch_labels.astype(np.int64))
    return ImageArray(np.concatenate(images), np.concatenate(labels))


def image_folder_classes(data_dir):
    """The class folders of --data-dir/train, which --data-dir/val must match."""
    found = {}
    for split in ("train", "val"):
        folder = os.path.join(data_dir, split)
        if not os.path.isdir(folder):
            raise UsageError(f"--dataset imagefolder needs {folder}, one folder of images per class")
        found[split] = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not found["train"] or found["train"] != found["val"]:
        raise UsageError(f"--data-dir {data_dir}: train/ and val/ must hold the same class folders, found "
                         f"{found['train'] or 'none'} and {found['val'] or 'none'}")
    return found["train"]


def read_image(path):
    """The image file at `path` as RGB; a ValueError naming the file when it cannot be read (PIL's
    own message for a truncated file does not)."""
    from PIL import Image
    from torchvision.datasets.folder import pil_loader

    try:
        return pil_loader(path)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read the image {path} ({exc}); remove or replace it") from None


def load_image_folder(data_dir, split, size):
    from torchvision import datasets, transforms

    image_folder_classes(data_dir)
    transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                                    transforms.Normalize([PIXEL_MEAN] * 3, [PIXEL_STD] * 3)])
    folder = os.path.join(data_dir, "train" if split == "train" else "val")
    try:
        return datasets.ImageFolder(folder, transform=transform, loader=read_image)
    except FileNotFoundError as exc:
        raise UsageError(f"--data-dir {data_dir}: {exc}") from None


def describe(cfg):
    """(input shape, classes) of image data set cfg.dataset, found without reading any image; a
    UsageError for a missing --data-dir or one not in the data set's format."""
    name = cfg.dataset
    if name == "synthetic-images":
        return (3, cfg.image_size, cfg.image_size), cfg.image_classes
    if is_factory(name):
        train, _ = open_factory(name)
        return tuple(train[0][0].shape), int(labels_of(train).max()) + 1
    if not cfg.data_dir:
        raise UsageError(f"--dataset {name} needs --data-dir, the folder that holds it")
    if not os.path.isdir(cfg.data_dir):
        raise UsageError(f"--data-dir {cfg.data_dir} is not a directory")
    if name == "imagefolder":
        return (3, cfg.image_size, cfg.image_size), len(image_folder_classes(cfg.data_dir))
    cifar_folder(name, cfg.data_dir)
    return (3, 32, 32), CIFAR[name][4]


def open_split(cfg, split):
    """The "train" or "test" Dataset of image data set cfg.dataset."""
    name = cfg.dataset
    if name == "synthetic-images":
        shape = (3, cfg.image_size, cfg.image_size)
        return SyntheticImages(SYNTHETIC_SIZES[split], shape, cfg.image_classes, cfg.seed, split)
    if name == "imagefolder":
        return load_image_folder(cfg.data_dir, split, cfg.image_size)
    if name in CIFAR:
        return load_cifar(name, cfg.data_dir, split)
    train, test = open_factory(name)
    return test if split == "test" else train


def open_factory(spec):
    from .models import call_factory

    try:
        made = call_factory(spec, "--dataset")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not (isinstance(made, tuple) and len(made) == 2
            and all(isinstance(d, torch.utils.data.Dataset) for d in made)):
        raise UsageError(f"--dataset {spec} must return (train, test), two torch Datasets of (image, label)")
    return made


def labels_of(dataset):
    """The labels of a Dataset: its `targets` when it has them, else read sample by sample."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [int(dataset[i][1]) for i in range(len(dataset))]
    return np.asarray(targets, dtype=np.int64)


def crop_and_flip(image, rng):
    """A random crop of `image` padded by CROP_PADDING with zeros, flipped left-right half the time."""
    height, width = image.shape[-2:]
    padded = torch.nn.functional.pad(image, (CROP_PADDING,) * 4)
    top, left = rng.integers(0, 2 * CROP_PADDING + 1, 2)
    image = padded[..., top : top + height, left : left + width]
    return image.flip(-1) if rng.random() < 0.5 else image


class Shard(torch.utils.data.Dataset):
    """One worker's samples of `dataset`, addressed by (epoch, position in the shard), augmented
    (when `augment`) from (seed, epoch, sample index)."""

    def __init__(self, dataset, indices, seed, augment):
        self.dataset, self.indices, self.seed, self.augment = dataset, indices, seed, augment

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, key):
        epoch, position = key
        index = int(self.indices[position])
        image, label = self.dataset[index]
        if self.augment:
            image = crop_and_flip(image, np.random.default_rng((self.seed, epoch, index)))
        return image, label


class ShardSampler:
    """Minibatches (image tensor, label tensor) of a Shard through a DataLoader with `loader_workers`
    processes; the batch order comes from a seeded BatchOrder, and state() / load_state() save and
    restore it, so a resumed run draws the same batches."""

    def __init__(self, shard, batch_size, seed, loader_workers=0):
        self.shard, self.loader_workers = shard, loader_workers
        self.order = BatchOrder(len(shard), batch_size, seed)
        self.batches, self.left = None, 0  # the loader over the rest of this epoch, and its batches to come

    def state(self):
        return self.order.state()

    def load_state(self, meta, arrays):
        self.order.load_state(meta, arrays)
        self.batches, self.left = None, 0

    def next(self):
        if not self.left:
            batches = self.order.upcoming()  # first, as it may start the next epoch
            upcoming = [[(self.order.epoch, int(p)) for p in batch] for batch in batches]
            loader = torch.utils.data.DataLoader(self.shard, batch_sampler=upcoming, num_workers=self.loader_workers)
            self.batches, self.left = iter(loader), len(upcoming)
        self.order.take()  # the loader reads ahead; the order counts what was handed out
        self.left -= 1
        return next(self.batches)
