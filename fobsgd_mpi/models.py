"""Models whose parameters live in one flat float32 array (the vector the algorithms exchange)."""
import numpy as np
import torch

MODELS = ("logreg", "mlp", "cnn1d", "wide-mlp")


def build(name, n_features, n_outputs, width=256, seed=0):
    torch.manual_seed(seed)
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
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def parameter_count(name, n_features, n_outputs, width=256):
    """d of the model `build` makes, counted on torch's meta device (nothing is allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build(name, n_features, n_outputs, width).parameters())


class FlatModel:
    """A torch module whose parameters and gradients are views of two flat float32 arrays.

    Tensors with at least `min_compress_numel` elements come first; `d_compressed` counts them,
    so params[:d_compressed] is what an algorithm compresses and the rest can travel fp32.
    """

    def __init__(self, module, min_compress_numel=0):
        self.module = module
        params = sorted(module.parameters(), key=lambda p: p.numel() < min_compress_numel)
        self.d = sum(p.numel() for p in params)
        self.d_compressed = sum(p.numel() for p in params if p.numel() >= min_compress_numel)
        self.params = np.empty(self.d, dtype=np.float32)
        self.grads = np.zeros(self.d, dtype=np.float32)
        off = 0
        for p in params:
            n = p.numel()
            self.params[off : off + n] = p.detach().reshape(-1).numpy()
            p.data = torch.from_numpy(self.params[off : off + n]).view_as(p)
            p.grad = torch.from_numpy(self.grads[off : off + n]).view_as(p)
            off += n

    def gradient(self, x, y, loss_fn):
        """Fills self.grads with the minibatch gradient; returns the loss."""
        self.grads[:] = 0
        self.module.train()
        loss = loss_fn(self.module(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        return float(loss.detach())

    def evaluate(self, x, y, loss_fn, classes):
        return evaluate(self.module, x, y, loss_fn, classes)


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


def loss_for(n_classes):
    return torch.nn.functional.cross_entropy if n_classes else torch.nn.functional.mse_loss
