from functools import partial

import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau, StepLR

from lifecycle.training.optim import WarmupCosineLR, build_optimizers


def _model():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    return model


def test_only_trainable_parameters_reach_the_optimizer():
    opt = build_optimizers(
        _model(), partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True), None, 10
    )
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 4 + 8 + 2


def test_one_cycle_gets_total_steps_from_the_trainer_and_steps_per_batch():
    out = build_optimizers(
        _model(), torch.optim.AdamW, partial(OneCycleLR, max_lr=0.01), total_steps=123
    )
    sched = out["lr_scheduler"]
    assert isinstance(sched["scheduler"], OneCycleLR) and sched["scheduler"].total_steps == 123
    assert sched["interval"] == "step"


def test_explicit_total_steps_is_kept():
    out = build_optimizers(
        _model(), torch.optim.Adam, partial(OneCycleLR, max_lr=0.01, total_steps=7), total_steps=99
    )
    assert out["lr_scheduler"]["scheduler"].total_steps == 7


def test_plateau_watches_the_monitor_and_step_lr_is_per_epoch():
    out = build_optimizers(
        _model(), torch.optim.RMSprop, partial(ReduceLROnPlateau, factor=0.5), 10, monitor="val/acc"
    )
    assert (
        out["lr_scheduler"]["monitor"] == "val/acc" and out["lr_scheduler"]["interval"] == "epoch"
    )
    out = build_optimizers(_model(), torch.optim.Adagrad, partial(StepLR, step_size=2), 10)
    assert (
        isinstance(out["lr_scheduler"]["scheduler"], StepLR)
        and out["lr_scheduler"]["interval"] == "epoch"
    )


def test_unknown_length_is_a_clear_error():
    with pytest.raises(ValueError, match="max_epochs"):
        build_optimizers(
            _model(), torch.optim.Adam, partial(WarmupCosineLR), total_steps=float("inf")
        )


def test_warmup_cosine_rises_linearly_then_anneals():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosineLR(
        opt, total_steps=100, warmup_steps=0.1, warmup_start_factor=0.0, min_lr_factor=0.1
    )
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineLR(opt, total_steps=10, warmup_steps=10)


def test_no_trainable_parameters_is_an_error():
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="No trainable parameters"):
        build_optimizers(model, torch.optim.Adam, None, 1)


def lr_sequence(make, steps=40):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler, out = make(opt), []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


def test_warmup_cosine_is_transformers_schedule_only_when_warm_up_starts_at_zero():
    """Why WarmupCosineLR stays: the library schedule warms up from 0, ours (and every recipe)
    from ``warmup_start_factor`` (0.01) x the rate."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup as hf

    def ours(**kw):
        return lambda o: WarmupCosineLR(o, total_steps=40, warmup_steps=4, min_lr_factor=0.1, **kw)

    theirs = lr_sequence(lambda o: hf(o, 4, 40, min_lr_rate=0.1))
    assert lr_sequence(ours(warmup_start_factor=0.0)) == theirs
    default = lr_sequence(ours())
    assert default[0] == pytest.approx(0.001) and theirs[0] == 0.0
    assert default[4:] == theirs[4:]  # the same cosine after the warm-up


def test_groups_at_scales_keep_their_ratio_with_a_scheduler_given_one_rate():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    groups = [(list(model[1].parameters()), 1.0), (list(model[0].parameters()), 0.25)]
    out = build_optimizers(model, partial(torch.optim.AdamW, lr=0.01),
                           partial(OneCycleLR, max_lr=0.05), 10, param_groups=groups)  # fmt: skip
    head, low = out["optimizer"].param_groups
    assert low["params"] == groups[1][0]
    for key in ("lr", "initial_lr", "max_lr", "min_lr"):
        assert low[key] == pytest.approx(0.25 * head[key])
