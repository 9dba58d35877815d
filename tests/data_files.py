"""Small data sets written in each on-disk format the trainer reads (nothing downloads)."""
import pickle

import numpy as np


def write_cifar(folder, name="cifar10", per_file=20, seed=0):
    """CIFAR python batches as distributed (folder/cifar-10-batches-py/...); returns folder."""
    g = np.random.default_rng(seed)
    if name == "cifar10":
        extracted, files, label_key, classes = "cifar-10-batches-py", \
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10
    else:
        extracted, files, label_key, classes = "cifar-100-python", ["train", "test"], b"fine_labels", 100
    (folder / extracted).mkdir(parents=True)
    for file in files:
        batch = {b"data": g.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 label_key: g.integers(0, classes, per_file).tolist()}
        with open(folder / extracted / file, "wb") as f:
            pickle.dump(batch, f)
    return folder


def write_image_folder(folder, classes=("cat", "dog"), per_class=6, size=12, seed=0):
    """folder/train/<class>/*.png and folder/val/<class>/*.png of random RGB pixels; returns folder."""
    from PIL import Image

    g = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(1, per_class // 3))):
        for c in classes:
            (folder / split / c).mkdir(parents=True)
            for i in range(count):
                pixels = g.integers(0, 256, (size, size + 2, 3), dtype=np.uint8)  # not square: resized
                Image.fromarray(pixels).save(folder / split / c / f"{i}.png")
    return folder


def write_npz(path, n_train=40, n_test=10, shape=(6,), classes=3, seed=0, **replace):
    """x_train, y_train, x_test, y_test of random inputs and labels; `replace` swaps arrays."""
    g = np.random.default_rng(seed)
    arrays = {"x_train": g.standard_normal((n_train, *shape)).astype(np.float32),
              "y_train": g.integers(0, classes, n_train), "x_test": g.standard_normal((n_test, *shape)),
              "y_test": g.integers(0, classes, n_test)}
    arrays.update(replace)
    np.savez(path, **arrays)
    return path
