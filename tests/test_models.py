import numpy as np
import torch

from fobsgd_mpi import models


def test_gradients_in_train_mode_evaluation_in_eval_mode():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.5), torch.nn.Linear(32, 3))
    model = models.FlatModel(module)
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    y = np.arange(64) % 3
    loss_fn = models.loss_for(3)
    first = models.evaluate(module, x, y, loss_fn, 3)
    assert models.evaluate(module, x, y, loss_fn, 3) == first  # dropout off: the same figures twice
    with torch.no_grad():
        expected = float(loss_fn(module.eval()(torch.from_numpy(x)), torch.from_numpy(y)))
    assert first[0] == expected
    module.eval()
    model.gradient(x, y, loss_fn)
    assert module.training  # gradients are taken with dropout on
    models.evaluate(module, x, y, loss_fn, 3)
    assert module.training  # and evaluation leaves the mode as it found it


def test_torchvision_resnets_get_the_cifar_stem_on_small_inputs_only():
    small = models.build("torchvision:resnet18", (1, 32, 32), 7)
    assert (small.conv1.in_channels, small.conv1.kernel_size, small.conv1.stride) == (1, (3, 3), (1, 1))
    assert isinstance(small.maxpool, torch.nn.Identity) and small.fc.out_features == 7
    assert small(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    large = models.build("torchvision:resnet18", (3, 96, 96), 7)
    assert (large.conv1.kernel_size, large.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(large.maxpool, torch.nn.MaxPool2d)


def test_other_torchvision_models_get_the_data_sets_channels_and_classes():
    module = models.build("torchvision:mobilenet_v3_small", (1, 32, 32), 5)
    assert module.features[0][0].in_channels == 1
    assert module.eval()(torch.zeros(2, 1, 32, 32)).shape == (2, 5)


def test_built_in_models_flatten_images_and_count_their_parameters_on_the_meta_device():
    module = models.build("mlp", (3, 4, 4), 10, 16)
    assert module(torch.zeros(2, 3, 4, 4)).shape == (2, 10)
    assert models.check_model("mlp", (3, 4, 4), 10, 16) == models.FlatModel(module).d
    resnet = sum(p.numel() for p in models.build("torchvision:resnet18", (3, 32, 32), 10).parameters())
    assert models.check_model("torchvision:resnet18", (3, 32, 32), 10) == resnet
