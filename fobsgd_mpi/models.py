"""Models whose parameters live in one flat float32 array (the vector the algorithms exchange).

A model is named by one of the built-ins (MODELS), by `torchvision:NAME` (any torchvision
classification model; ResNets on inputs of at most 64 px get the CIFAR recipe: a 3x3 stride-1
first conv and no max-pool), by `timm:NAME` (when timm is installed) or by `package.module:factory`,
a callable taking (input_shape, n_classes) and returning a torch.nn.Module.
"""
import importlib
import importlib.util

import numpy as np
import torch

from . import arrays
from .errors import one_line

MODELS = ("logreg", "mlp", "cnn1d", "wide-mlp")
MODEL_FORMS = f"{', '.join(MODELS)}, torchvision:NAME, timm:NAME or package.module:factory"
SMALL_INPUT = 64  # torchvision ResNets on inputs up to this many pixels a side use the CIFAR stem


def build(name, input_shape, n_outputs, width=256, seed=0):
    """The model `name` for inputs of `input_shape` (without the batch axis; an int n means (n,))
    and `n_outputs` classes or regression targets, its initial weights drawn from `seed`."""
    torch.manual_seed(seed)
    input_shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    if name.startswith("torchvision:"):
        return _torchvision_model(name.split(":", 1)[1], input_shape, n_outputs)
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name.split(":", 1)[1], pretrained=False, num_classes=n_outputs,
                                 in_chans=input_shape[0])
    if ":" in name:
        module = call_factory(name, "--model", input_shape, n_outputs)
        if not isinstance(module, torch.nn.Module):
            raise ValueError(f"--model {name} returned a {type(module).__name__}, not a torch.nn.Module")
        return module
    module = _builtin(name, int(np.prod(input_shape)), n_outputs, width)
    return torch.nn.Sequential(torch.nn.Flatten(), module) if len(input_shape) > 1 else module


def _builtin(name, n_features, n_outputs, width):
    nn = torch.nn
    if name == "logreg":
        return nn.Linear(n_features, n_outputs)
    if name == "mlp":
        return nn.Sequential(nn.Linear(n_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                             nn.Linear(width, n_outputs))
    if name == "wide-mlp":  # d grows as width^2 per hidden layer: width 2048 -> about 12.7M
        return nn.Sequential(nn.Linear(n_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                             nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                             nn.Linear(width, n_outputs))
    if name == "cnn1d":
        channels = max(8, width // 8)
        return nn.Sequential(nn.Unflatten(1, (1, n_features)), nn.Conv1d(1, channels, 5, padding=2), nn.ReLU(),
                             nn.Conv1d(channels, channels, 5, padding=2, stride=2), nn.ReLU(),
                             nn.Conv1d(channels, channels, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(),
                             nn.Linear(channels * ((n_features + 3) // 4), n_outputs))
    raise ValueError(f"unknown model {name!r}; choose one of {MODEL_FORMS}")


def _torchvision_model(name, input_shape, n_outputs):
    import torchvision

    if len(input_shape) != 3:
        raise ValueError(f"torchvision:{name} needs images (channels, height, width), but the data set's "
                         f"inputs have shape {input_shape}; choose an image data set or a built-in model")
    model = torchvision.models.get_model(name, weights=None, num_classes=n_outputs)
    channels, height, width = input_shape
    nn = torch.nn
    if isinstance(model, torchvision.models.ResNet) and max(height, width) <= SMALL_INPUT:
        model.conv1 = nn.Conv2d(channels, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        return model
    path, conv = next((path, m) for path, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels != channels:
        parent, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Conv2d(
            channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
            conv.bias is not None, conv.padding_mode))
    return model


def find_factory(spec):
    """The callable named by "package.module:attribute"; ValueError saying what is wrong."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} from {spec!r} ({exc}); check the name and PYTHONPATH") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"names no callable {attr!r} in {module_name} (from {spec!r})")
    return factory


def call_factory(spec, flag, *args):
    """The user factory `spec` called with `args`; whatever it raises becomes a ValueError naming
    `flag`, so that a broken factory is one line, not a traceback from every rank."""
    try:
        factory = find_factory(spec)
    except ValueError as exc:
        raise ValueError(f"{flag} {exc}") from None
    try:
        return factory(*args)
    except Exception as exc:  # the user's code: any exception is a bad setting of `flag`
        raise ValueError(f"{flag} {spec} raised {type(exc).__name__}: {exc}; fix the factory (it is called "
                         f"with {len(args)} argument(s){': the input shape and the number of outputs' if args else ''})"
                         ) from None


def check_name(name):
    """ValueError unless `name` names a model build can make (the rule of --model)."""
    if name in MODELS:
        return
    kind, _, rest = name.partition(":")
    if kind == "torchvision" and rest:
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if rest not in known:
            raise ValueError(f"names no torchvision classification model ({rest!r}); e.g. "
                             "torchvision:resnet18, see torchvision.models.list_models()")
    elif kind == "timm" and rest:
        if importlib.util.find_spec("timm") is None:
            raise ValueError(f"{name} needs timm, which is not installed (pip install timm)")
        import timm

        if not timm.is_model(rest):
            raise ValueError(f"names no timm model ({rest!r}); see timm.list_models()")
    elif rest and kind and all(part.isidentifier() for part in kind.split(".")) and rest.isidentifier():
        find_factory(name)
    else:
        raise ValueError(f"must be one of {MODEL_FORMS}, got {name!r}")


def check_model(name, input_shape, n_outputs, width=256):
    """d of the model `build` makes, after checking that it has parameters and maps a batch of
    float inputs of `input_shape` to `n_outputs` outputs per sample; ValueError saying which does
    not hold. Built and run on torch's meta device (nothing is allocated or computed); a user
    factory that cannot be (one that reads a value, e.g. with .item()) is built and run on the CPU."""
    factory = ":" in name and name.split(":", 1)[0] not in ("torchvision", "timm")
    try:
        return _check_on("meta", name, input_shape, n_outputs, width)
    except Exception:
        if not factory:
            raise
        return _check_on("cpu", name, input_shape, n_outputs, width)  # a broken factory's own error is the one reported


@torch.no_grad()
def _check_on(device, name, input_shape, n_outputs, width):
    with torch.device(device):
        model = build(name, input_shape, n_outputs, width)
        d = sum(p.numel() for p in model.parameters())
        if not d:
            raise ValueError(f"--model {name} has no parameters to train; give a model with some")
        shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        model.eval()
        try:
            out = model(torch.zeros((2, *shape)))
        except Exception as exc:
            if device == "meta" and isinstance(exc, NotImplementedError):
                raise
            raise ValueError(f"--model {name} cannot take this data set's inputs of shape {shape} "
                             f"({one_line(exc)}); choose a model for such inputs") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_outputs):
        got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"--model {name} gives outputs of shape {got} per sample, but the data set needs "
                         f"{n_outputs} (its classes or targets); build the model with {n_outputs} outputs")
    return d


class FlatModel:
    """A torch module whose parameters and gradients are views of two flat float32 vectors:
    numpy arrays (`device` None: the native codec's path) or tensors on `device` (the torch
    codec's, arrays.py), where the module then lives too.

    Tensors with at least `min_compress_numel` elements come first; `d_compressed` counts them,
    so params[:d_compressed] is what an algorithm compresses and the rest can travel fp32.
    """

    def __init__(self, module, min_compress_numel=0, device=None):
        self.module = module if device is None else module.to(device)
        self.device = device
        params = sorted(module.parameters(), key=lambda p: p.numel() < min_compress_numel)
        self.d = sum(p.numel() for p in params)
        self.d_compressed = sum(p.numel() for p in params if p.numel() >= min_compress_numel)
        self.tensor_sizes = tuple(p.numel() for p in params)  # in the flat vectors' order
        self.params = arrays.zeros(self.d, device)
        self.grads = arrays.zeros(self.d, device)
        flat = (lambda v: torch.from_numpy(v)) if device is None else (lambda v: v)
        off = 0
        for p in params:
            n = p.numel()
            arrays.assign(self.params[off : off + n], p.detach().reshape(-1))
            p.data = flat(self.params[off : off + n]).view_as(p)
            p.grad = flat(self.grads[off : off + n]).view_as(p)
            off += n

    def gradient(self, x, y, loss_fn):
        """Fills self.grads with the gradient of the minibatch (numpy arrays or tensors, moved to the
        model's device); returns the loss."""
        self.grads[:] = 0
        self.module.train()
        dev = self.device or "cpu"
        loss = loss_fn(self.module(torch.as_tensor(x).to(dev, non_blocking=True)),
                       torch.as_tensor(y).to(dev, non_blocking=True))
        loss.backward()
        return float(loss.detach())


@torch.no_grad()
def evaluate(module, x, y, loss_fn, classes):
    """(loss, accuracy) of `module` on (x, y) in eval mode (dropout off, batch norm on its running
    statistics), its mode restored after; accuracy is NaN for regression (classes = 0). The data
    go to the module's device (CPU or GPU)."""
    dev = next(module.parameters()).device
    training = module.training
    module.eval()
    try:
        out = module(torch.from_numpy(x).to(dev))
    finally:
        module.train(training)
    loss = float(loss_fn(out, torch.from_numpy(y).to(dev)))
    acc = float((out.argmax(1).cpu().numpy() == y).mean()) if classes else float("nan")
    return loss, acc


@torch.no_grad()
def evaluate_dataset(module, dataset, loss_fn, batch_size=256, loader_workers=0):
    """(loss, accuracy) of classifier `module` on a torch Dataset of (input, label) pairs, batch by
    batch in eval mode, its mode restored after."""
    training = module.training
    module.eval()
    loss_sum, correct = 0.0, 0
    try:
        dev = next(module.parameters()).device
        for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=loader_workers):
            x, y = x.to(dev), y.to(dev)
            out = module(x)
            loss_sum += float(loss_fn(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
    finally:
        module.train(training)
    return loss_sum / len(dataset), correct / len(dataset)


def loss_for(n_classes):
    return torch.nn.functional.cross_entropy if n_classes else torch.nn.functional.mse_loss
