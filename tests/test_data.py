"""The data sets read from files (cifar pickles, image folders, npz), the made ones, each worker's
seeded batches of its shard, and the one-line refusals of missing or malformed data."""
import importlib.util
import pickle
import shutil

import numpy as np
import pytest
import torch

from fobsgd_mpi import config, data, image_data, workload
from fobsgd_mpi.errors import UsageError
from tests.data_files import write_cifar, write_image_folder, write_npz


def settings(*flags):
    return config.parse_config(["--model", "logreg", *map(str, flags)])


@pytest.mark.parametrize("name, n_train, classes", [("cifar10", 100, 10), ("cifar100", 20, 100)])
def test_cifar_python_batches_load_as_normalized_images(name, n_train, classes, tmp_path):
    write_cifar(tmp_path, name)
    extracted = next(tmp_path.iterdir())
    with open(extracted / ("test_batch" if name == "cifar10" else "test"), "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    for data_dir in (tmp_path, extracted):  # the parent of the extracted folder, or that folder
        cfg = settings("--dataset", name, "--data-dir", data_dir)
        assert image_data.describe(cfg) == ((3, 32, 32), classes)
        train, test = image_data.open_split(cfg, "train"), image_data.open_split(cfg, "test")
        assert (len(train), len(test)) == (n_train, 20)
        image, label = test[3]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        expected = (raw[b"data"][3].reshape(3, 32, 32) / 255 - 0.5) / 0.25
        np.testing.assert_allclose(image.numpy(), expected, atol=1e-6)
        assert label == raw[b"fine_labels" if name == "cifar100" else b"labels"][3]


def test_an_image_folder_is_resized_to_image_size_with_classes_from_its_folders(tmp_path):
    write_image_folder(tmp_path, classes=("cat", "dog", "eel"), per_class=3, size=12)
    cfg = settings("--dataset", "imagefolder", "--data-dir", tmp_path, "--image-size", 8)
    assert image_data.describe(cfg) == ((3, 8, 8), 3)
    train, test = image_data.open_split(cfg, "train"), image_data.open_split(cfg, "test")
    assert (len(train), len(test)) == (9, 3)
    assert train[0][0].shape == (3, 8, 8)
    assert image_data.labels_of(train).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_npz_arrays_load_as_classes_or_regression_targets(tmp_path):
    ds = data.load(f"npz:{write_npz(tmp_path / 'c.npz', shape=(2, 3), classes=4)}")
    assert ds.n_classes == 4 and ds.x_train.shape == (40, 2, 3) and ds.y_train.dtype == np.int64
    targets = np.random.default_rng(1).standard_normal((40, 2))
    path = write_npz(tmp_path / "r.npz", y_train=targets, y_test=targets[:10])
    ds = data.load(f"npz:{path}")
    assert ds.n_classes == 0 and ds.y_train.shape == (40, 2) and ds.y_train.dtype == np.float32
    assert data.check_npz(str(path)) == ((6,), 2)


def test_synthetic_images_are_the_same_on_every_call_and_of_the_asked_shape():
    cfg = settings("--dataset", "synthetic-images", "--image-size", 16, "--image-classes", 7)
    train, again = image_data.open_split(cfg, "train"), image_data.open_split(cfg, "train")
    assert train[5][0].shape == (3, 16, 16)
    assert torch.equal(train[5][0], again[5][0]) and not torch.equal(train[5][0], train[6][0])
    assert set(image_data.labels_of(train)) == set(range(7))


class FixedDraws:
    """Stands in for a numpy Generator: a crop offset and a flip decided by the test."""

    def __init__(self, top, left, flip):
        self.offsets, self.flip = np.array([top, left]), flip

    def integers(self, low, high, size):
        return self.offsets

    def random(self):
        return 0.0 if self.flip else 1.0


def test_crop_and_flip_shifts_in_zero_padding_and_mirrors():
    image = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 6, 6) + 1
    assert torch.equal(image_data.crop_and_flip(image, FixedDraws(4, 4, False)), image)
    assert torch.equal(image_data.crop_and_flip(image, FixedDraws(4, 4, True)), image.flip(-1))
    shifted = image_data.crop_and_flip(image, FixedDraws(0, 5, False))
    assert (shifted[:, :4] == 0).all() and torch.equal(shifted[:, 4:, :5], image[:, :2, 1:])


def test_shard_batches_resume_identically_with_or_without_loader_workers():
    g = np.random.default_rng(0)
    images = image_data.ImageArray(g.integers(0, 256, (30, 3, 8, 8), dtype=np.uint8), np.arange(30) % 3)
    shard = image_data.Shard(images, np.arange(3, 30, 2), seed=5, augment=True)  # 14 samples: 4 batches an epoch

    def batches(sampler, n):
        return [sampler.next() for _ in range(n)]

    reference = image_data.ShardSampler(shard, 3, seed=(5, 1))
    first = batches(reference, 3)
    meta, arrays = reference.state()
    rest = batches(reference, 6)  # across two epoch ends
    resumed = image_data.ShardSampler(shard, 3, seed=(5, 9), loader_workers=1)
    resumed.load_state(meta, arrays)
    for (x, y), (x_again, y_again) in zip(rest, batches(resumed, 6), strict=True):
        assert torch.equal(x, x_again) and torch.equal(y, y_again)
    assert set(torch.cat([y for _, y in first + rest[:1]]).tolist()) <= {0, 1, 2}
    # the same sample is augmented differently in another epoch (and identically in the same one)
    index = int(shard.indices[0])
    assert not torch.equal(shard[(0, 0)][0], shard[(1, 0)][0]) and torch.equal(shard[(0, 0)][0], shard[(0, 0)][0])
    assert not torch.equal(shard[(0, 0)][0], images[index][0])


def test_a_batch_larger_than_a_workers_shard_is_a_usage_error():
    with pytest.raises(UsageError, match=r"^--batch-size 64 exceeds the 40 training samples of worker rank 2 "
                                         r"\(2 workers share 90\); lower --batch-size or use fewer workers$"):
        workload.check_batch_size(64, {0: 0, 1: 50, 2: 40}, [1, 2], 90)
    workload.check_batch_size(40, {0: 0, 1: 50, 2: 40}, [1, 2], 90)


def test_user_factories_make_the_data_set_and_the_model(tmp_path, monkeypatch):
    (tmp_path / "user_workload.py").write_text(
        "import torch\n"
        "def data():\n"
        "    x = torch.randn(12, 1, 5, 5)\n"
        "    y = torch.arange(12) % 4\n"
        "    return torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(x[:4], y[:4])\n"
        "def net(input_shape, n_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25 * input_shape[0], n_classes))\n"
        "def not_a_net(input_shape, n_classes):\n"
        "    return 'a string'\n"
        "def broken(input_shape, n_classes):\n"
        "    raise RuntimeError('boom')\n"
        "def reads_a_value(input_shape, n_classes):\n"
        "    features = int(torch.tensor(input_shape).prod().item())\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(features, n_classes))\n"
        "def no_data():\n"
        "    raise KeyError('gone')\n"
        "def no_params(input_shape, n_classes):\n"
        "    return torch.nn.Flatten()\n"
        "def more_outputs(input_shape, n_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, n_classes + 2))\n"
        "def other_inputs(input_shape, n_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(24, n_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config.parse_config(["--dataset", "user_workload:data", "--model", "user_workload:net"])
    assert image_data.describe(cfg) == ((1, 5, 5), 4)
    from fobsgd_mpi import models
    module = models.build(cfg.model, (1, 5, 5), 4)
    assert module(image_data.open_split(cfg, "test")[0][0][None]).shape == (1, 4)
    with pytest.raises(ValueError, match="returned a str, not a torch.nn.Module"):
        config.parse_config(["--dataset", "user_workload:data", "--model", "user_workload:not_a_net"])
    # what a factory raises is one line naming the option; a factory that needs real tensors is counted on the CPU
    with pytest.raises(ValueError, match=r"^--model user_workload:broken raised RuntimeError: boom; fix the factory"):
        config.parse_config(["--dataset", "user_workload:data", "--model", "user_workload:broken"])
    with pytest.raises(ValueError, match=r"^--model os:getcwd raised TypeError"):
        config.parse_config(["--dataset", "user_workload:data", "--model", "os:getcwd"])
    with pytest.raises(UsageError, match=r"^--dataset user_workload:no_data raised KeyError: 'gone'"):
        config.parse_config(["--dataset", "user_workload:no_data"])
    config.parse_config(["--dataset", "user_workload:data", "--model", "user_workload:reads_a_value"])
    # a model that does not fit the data is refused before the run, not by every rank at its first step
    for name, message in [("no_params", "has no parameters to train"),
                          ("more_outputs", r"gives outputs of shape \(6,\) per sample, but the data set needs 4 "),
                          ("other_inputs", r"cannot take this data set's inputs of shape \(1, 5, 5\) \(RuntimeError: "
                                           r"mat1 and mat2 shapes cannot be multiplied")]:
        with pytest.raises(UsageError, match=f"^--model user_workload:{name} {message}") as refused:
            config.parse_config(["--dataset", "user_workload:data", "--model", f"user_workload:{name}"])
        assert "\n" not in str(refused.value)


BAD = {
    "no data dir": (lambda tmp: ["--dataset", "cifar10"], "--dataset cifar10 needs --data-dir"),
    "missing dir": (lambda tmp: ["--dataset", "cifar100", "--data-dir", tmp / "nowhere"], "is not a directory"),
    "not cifar": (lambda tmp: ["--dataset", "cifar10", "--data-dir", tmp], "holds no cifar10 python batches"),
    "no val": (lambda tmp: (shutil.rmtree(write_image_folder(tmp) / "val"), ["--dataset", "imagefolder", "--data-dir", tmp])[1],
               "imagefolder needs .*val, one folder of images per class"),
    "other classes": (lambda tmp: (write_image_folder(tmp), (tmp / "val" / "dog").rename(tmp / "val" / "emu"),
                                   ["--dataset", "imagefolder", "--data-dir", tmp])[-1],
                      r"train/ and val/ must hold the same class folders, found \['cat', 'dog'\] and \['cat', 'emu'\]"),
    "npz missing": (lambda tmp: ["--dataset", f"npz:{tmp / 'x.npz'}"], "x.npz does not exist"),
    "npz not npz": (lambda tmp: ((tmp / "x.npz").write_text("hello"), ["--dataset", f"npz:{tmp / 'x.npz'}"])[1],
                    "is not a numpy .npz archive .np.savez writes one.; is it damaged"),
    "npz a npy": (lambda tmp: (np.save(tmp / "x.npy", np.zeros(3)), ["--dataset", f"npz:{tmp / 'x.npy'}"])[1],
                  "is not a numpy .npz archive but a single .npy array"),
    "npz cut short": (lambda tmp: ((tmp / "c.npz").write_bytes(write_npz(tmp / "x.npz").read_bytes()[:300]),
                                   ["--dataset", f"npz:{tmp / 'c.npz'}"])[1], "is not a numpy .npz archive"),
    "npz strings": (lambda tmp: ["--dataset", f"npz:{write_npz(tmp / 'x.npz', x_train=np.full((40, 6), 'a'))}"],
                    "x_train and x_test must be numeric arrays, got dtype kinds U and f"),
    "npz object labels": (lambda tmp: ["--dataset", f"npz:{write_npz(tmp / 'x.npz', y_train=np.array([1] * 40, dtype=object))}"],
                          "its arrays cannot be read .Object arrays"),
    "npz one axis": (lambda tmp: ["--dataset", f"npz:{write_npz(tmp / 'x.npz', x_train=np.zeros(40), x_test=np.zeros(10))}"],
                     r"need a sample axis and at least one feature axis"),
    "npz empty": (lambda tmp: ["--dataset", f"npz:{write_npz(tmp / 'x.npz', x_train=np.zeros((0, 6)), y_train=np.zeros(0, int))}"],
                  "must each hold at least one sample"),
    "npz no key": (lambda tmp: (np.savez(tmp / "x.npz", x_train=np.zeros(3)), ["--dataset", f"npz:{tmp / 'x.npz'}"])[1],
                   "must hold the arrays x_train, y_train, x_test, y_test"),
    "npz shapes": (lambda tmp: ["--dataset", f"npz:{write_npz(tmp / 'x.npz', x_test=np.zeros((10, 7)))}"],
                   r"x_train \(40, 6\) and x_test \(10, 7\) need the same shape per sample"),
    "npz label ids": (lambda tmp: ["--dataset", f"npz:{write_npz(tmp / 'x.npz', y_test=np.full(10, 10**9))}"],
                      r"the largest label is 1000000000, which makes 1,000,000,001 classes for 50 samples; labels "
                      r"must be class indices 0..C-1"),
    "npz labels": (lambda tmp: ["--dataset", f"npz:{write_npz(tmp / 'x.npz', y_train=np.zeros(39, int))}"],
                   "need as many labels as samples"),
    "dataset name": (lambda tmp: ["--dataset", "cifar11"], "--dataset must be one of mnist1d, .*, npz:PATH or "
                                                           "package.module:factory, got 'cifar11'"),
    "torchvision name": (lambda tmp: ["--model", "torchvision:resnet19"], "--model names no torchvision"),
    "factory module": (lambda tmp: ["--model", "no_such_package.nets:resnet"],
                       "--model cannot import 'no_such_package.nets'"),
    "factory callable": (lambda tmp: ["--dataset", "fobsgd_mpi.data:no_loader"], "--dataset names no callable"),
    "too small images": (lambda tmp: ["--model", "torchvision:alexnet", "--dataset", "synthetic-images"],
                         r"cannot take this data set's inputs of shape \(3, 32, 32\) \(RuntimeError: Given input size"),
    "images only": (lambda tmp: ["--model", "torchvision:resnet18", "--dataset", "digits"],
                    r"torchvision:resnet18 needs images \(channels, height, width\)"),
}


@pytest.mark.parametrize("case", BAD)
def test_missing_or_malformed_data_and_unknown_models_get_one_line(case, tmp_path):
    flags, message = BAD[case]
    with pytest.raises(ValueError, match=message) as refused:
        config.parse_config(["--model", "logreg", *map(str, flags(tmp_path))])
    assert "\n" not in str(refused.value)


def test_data_holding_nan_or_inf_is_refused_as_data(tmp_path):
    """Not left to become a NaN gradient, whose error says to lower --lr."""
    x = np.ones((40, 6), dtype=np.float32)
    x[3, 2] = np.nan
    path = write_npz(tmp_path / "x.npz", x_train=x, y_train=np.zeros(40), y_test=np.array([np.inf] * 10))
    with pytest.raises(UsageError, match=r"x_train and y_test hold NaN or Inf, or values beyond float32's range"):
        data.load_npz(str(path))
    huge = write_npz(tmp_path / "h.npz", x_test=np.full((10, 6), 1e300))  # finite in float64, Inf in float32
    with pytest.raises(UsageError, match=r"x_test hold NaN or Inf, or values beyond float32's range \(3.4e38\); "
                                         r"clean or rescale the data first"):
        data.load_npz(str(huge))


def test_timm_models_need_timm_installed(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real_find_spec(name, *a))
    with pytest.raises(UsageError, match=r"--model timm:resnet18 needs timm, which is not installed \(pip install timm\)"):
        config.parse_config(["--model", "timm:resnet18"])


def test_a_cifar_batch_that_is_not_one_is_refused(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    cfg = settings("--dataset", "cifar10", "--data-dir", tmp_path)
    with pytest.raises(UsageError, match="test_batch is not a cifar10 python batch"):
        image_data.open_split(cfg, "test")


def test_digits_are_the_arrays_scikit_learn_loads():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    ours_x, ours_y = data.digits()
    assert np.array_equal(ours_x, x) and np.array_equal(ours_y, y)


def test_mnist1d_is_generated_once_then_read_from_the_cache(tmp_path, monkeypatch):
    import mnist1d.data

    full_args, made = mnist1d.data.get_dataset_args, []

    def few_rows():
        args = full_args()
        args.num_samples = 100
        return args

    def counted(args):
        made.append(args.num_samples)
        return make(args)

    make = mnist1d.data.make_dataset
    monkeypatch.setattr(mnist1d.data, "get_dataset_args", few_rows)
    monkeypatch.setattr(mnist1d.data, "make_dataset", counted)
    monkeypatch.setenv("FOBSGD_CACHE", str(tmp_path))
    first, second = data.load("mnist1d"), data.load("mnist1d")
    assert made == [100] and len(first.x_train) + len(first.x_test) == 100
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(first, key), getattr(second, key)) and getattr(first, key).dtype == \
            getattr(second, key).dtype
    (cached,) = tmp_path.glob("mnist1d-*.npz")
    cached.write_bytes(b"damaged")  # an unreadable cache file is made again, not an error
    assert np.array_equal(data.load("mnist1d").x_train, first.x_train) and made == [100, 100]
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]
