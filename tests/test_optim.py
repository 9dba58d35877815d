"""optim.py: the schedules, the torch optimizers the options name, their state in a checkpoint;
config: the new flags and the API's options."""
import math

import numpy as np
import pytest
import torch

from fobsgd_mpi import config, optim
from fobsgd_mpi.errors import UsageError


def test_schedules_are_the_closed_forms():
    total = 30
    assert [optim.lr_factor("constant", t, total) for t in (0, 29)] == [1.0, 1.0]
    assert optim.lr_factor("cosine", 0, total) == 1.0
    assert optim.lr_factor("cosine", 15, total) == pytest.approx(0.5)
    assert [optim.lr_factor("step", t, total) for t in (9, 10, 19, 20, 29)] == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])
    # a linear warm-up multiplies the first K steps by (t + 1) / (K + 1)
    assert [optim.lr_factor("constant", t, total, 3) for t in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])
    assert optim.lr_factor("cosine", 1, total, 3) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi / 30)))


def test_the_scheduler_sets_the_learning_rate_of_each_step():
    cfg = config.parse_config(["--lr", "0.1", "--lr-schedule", "cosine", "--lr-warmup-steps", "2"])
    opt = optim.build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))])
    schedule = optim.build_scheduler(cfg, opt, 10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert seen == pytest.approx([0.1 * optim.lr_factor("cosine", t, 10, 2) for t in range(10)])


@pytest.mark.parametrize("flags, cls", [([], torch.optim.SGD), (["--optimizer", "adam"], torch.optim.Adam),
                                        (["--optimizer", "adamw", "--beta1", "0.8"], torch.optim.AdamW),
                                        (["--nesterov"], torch.optim.SGD)])
def test_the_optimizer_the_options_name(flags, cls):
    cfg = config.parse_config(["--weight-decay", "0.01", *flags])
    opt = optim.build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))])
    group = opt.param_groups[0]
    assert type(opt) is cls and group["weight_decay"] == 0.01
    if cls is torch.optim.SGD:
        assert group["momentum"] == 0.9 and group["nesterov"] == ("--nesterov" in flags)
    else:
        assert group["betas"] == (cfg.beta1, cfg.beta2)


def test_nesterov_needs_sgd_with_momentum():
    for flags in (["--momentum", "0"], ["--optimizer", "adam"]):
        with pytest.raises(UsageError, match="--nesterov needs --optimizer sgd and --momentum above 0"):
            config.parse_config(["--nesterov", *flags])


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_optimizer_and_schedule_state_restore_exactly(name):
    cfg = config.parse_config(["--optimizer", name, "--lr", "0.01", "--weight-decay", "0.1"])
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(5).astype(np.float32) for _ in range(6)]

    def run(p, opt, schedule, steps):
        for g in steps:
            p.grad = torch.from_numpy(g)
            opt.step()
            schedule.step()

    p = torch.nn.Parameter(torch.ones(5))
    opt = optim.build_optimizer(cfg, [p])
    schedule = optim.build_scheduler(cfg, opt, 6)
    run(p, opt, schedule, grads[:3])
    arrays, meta = optim.state_arrays(opt, schedule)
    saved = p.detach().clone()
    run(p, opt, schedule, grads[3:])

    q = torch.nn.Parameter(saved)
    opt2 = optim.build_optimizer(cfg, [q])
    schedule2 = optim.build_scheduler(cfg, opt2, 6)
    optim.load_state(opt2, schedule2, {k.split(".", 1)[1]: v for k, v in arrays.items()}, meta)
    run(q, opt2, schedule2, grads[3:])
    assert torch.equal(p, q)


def test_has_state():
    p = [torch.nn.Parameter(torch.zeros(1))]
    assert not optim.has_state(torch.optim.SGD(p, lr=0.1))
    assert optim.has_state(torch.optim.SGD(p, lr=0.1, momentum=0.9)) and optim.has_state(torch.optim.Adam(p))


def test_api_options_are_checked_as_the_flags_are():
    cfg = config.api_config(algorithm="liec-sgd", liec_period=4, servers=2)
    assert (cfg.algorithm, cfg.liec_period, cfg.servers) == ("liec-sgd", 4, "2")
    with pytest.raises(UsageError, match="unknown option.s. lr; the API takes algorithm"):
        config.api_config(lr=0.1)
    with pytest.raises(UsageError, match="--liec-period must lie in"):
        config.api_config(liec_period=0)
    with pytest.raises(UsageError, match="--algorithm must be one of"):
        config.api_config(algorithm="nope")
