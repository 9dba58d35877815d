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
    first = model.evaluate(x, y, loss_fn, 3)
    assert model.evaluate(x, y, loss_fn, 3) == first  # dropout off: the same figures twice
    with torch.no_grad():
        expected = float(loss_fn(module.eval()(torch.from_numpy(x)), torch.from_numpy(y)))
    assert first[0] == expected
    module.eval()
    model.gradient(x, y, loss_fn)
    assert module.training  # gradients are taken with dropout on
    model.evaluate(x, y, loss_fn, 3)
    assert module.training  # and evaluation leaves the mode as it found it
