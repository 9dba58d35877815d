"""torch.optim optimizers and torch.optim.lr_scheduler schedules applied to the exchanged direction.

Every rank builds the same optimizer and schedule from the same options and feeds it the same
direction (written into the parameters' .grad), so replicas stay bit-identical; the optimizer's
and the schedule's state travel in the checkpoint (`state_arrays` / `load_state`).

Schedules are one closed-form multiplier of the base learning rate per step (a LambdaLR), not
torch's chained CosineAnnealingLR / StepLR, whose recursive updates round differently after a
resume than in an uninterrupted run:
  constant: 1;  cosine: (1 + cos(pi t / T)) / 2;  step: 0.1 ** floor(3 t / T) (x0.1 at each third);
  a linear warm-up over the first W steps multiplies by (t + 1) / (W + 1).
"""
import json
import math

import numpy as np
import torch

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


def lr_factor(schedule, step, total, warmup_steps=0):
    """The multiplier of the base learning rate at `step` of `total` (see the module docstring)."""
    if schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * step / total))
    elif schedule == "step":
        factor = 0.1 ** (step * 3 // total)
    else:
        factor = 1.0
    if step < warmup_steps:
        factor *= (step + 1) / (warmup_steps + 1)
    return factor


def build_optimizer(cfg, parameters):
    """The torch optimizer --optimizer names, with the run's learning rate, momentum, betas, decay."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    adam = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return adam(parameters, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def build_scheduler(cfg, optimizer, total):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg.lr_schedule, step, total, cfg.lr_warmup_steps))


def has_state(optimizer):
    """Whether the optimizer keeps state between steps (momentum, Adam's moments): replicas whose
    directions differed once then differ for good, even after their parameters are averaged."""
    return any(group.get("momentum", 1) != 0 for group in optimizer.param_groups)


def state_arrays(optimizer, scheduler=None):
    """(arrays, meta) that restore `optimizer` (and `scheduler`) exactly: tensors as arrays named
    optimizer.<parameter index>.<key>, the rest as JSON-able meta."""
    saved = optimizer.state_dict()
    arrays = {f"optimizer.{index}.{key}": value.detach().cpu().numpy().copy()
              for index, state in saved["state"].items() for key, value in state.items() if value is not None}
    meta = {"param_groups": saved["param_groups"]}
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    return arrays, json.loads(json.dumps(meta))


def load_state(optimizer, scheduler, arrays, meta):
    """Restore what state_arrays saved; `arrays` without their "optimizer." prefix."""
    state = {}
    for name, value in arrays.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = torch.from_numpy(np.array(value))
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if scheduler is not None:
        scheduler.load_state_dict(meta["scheduler"])
