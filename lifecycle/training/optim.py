"""Optimizers and learning-rate schedules chosen in YAML by ``class_path``.

Stage modules take ``optimizer`` and ``scheduler`` as callables (LightningCLI's dependency
injection): any ``torch.optim`` optimizer and any ``torch.optim.lr_scheduler`` scheduler, or the
user's own, with no name registry. :func:`build_optimizers` fills in what a scheduler needs from
the Trainer (the total number of steps, the metric to monitor, step- or epoch-wise stepping).
:class:`WarmupCosineLR` is the one schedule torch lacks as a single class: cosine annealing
after a linear warm-up.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from lifecycle.compat import factory_keyword, factory_target

OptimizerFactory = Callable[[Iterable], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler | ReduceLROnPlateau]

STEP_WISE = (OneCycleLR,)


class WarmupCosineLR(LambdaLR):
    """Linear warm-up from ``warmup_start_factor * lr`` to ``lr``, then cosine annealing to ``min_lr_factor * lr``.

    Stepped every optimizer step. ``total_steps`` defaults to the Trainer's estimated number of
    optimizer steps when the scheduler is built by a ``lifecycle`` stage.

    Kept because no library schedule gives the same rates: ``transformers``'
    ``get_cosine_with_min_lr_schedule_with_warmup`` equals it only with
    ``warmup_start_factor=0`` (its warm-up starts at 0, every recipe here starts at 0.01 x), and
    torch's ``SequentialLR(LinearLR, CosineAnnealingLR)`` takes one absolute ``eta_min`` for every
    parameter group (not a factor of each group's rate) and drifts by rounding (~1e-16).

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        total_steps: optimizer steps in the whole run.
        warmup_steps: steps of linear warm-up; a float in (0, 1) is a share of ``total_steps``.
        warmup_start_factor: learning-rate factor at step 0.
        min_lr_factor: learning-rate factor reached at the last step.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int | float = 0.05,
        warmup_start_factor: float = 0.01,
        min_lr_factor: float = 0.0,
        last_epoch: int = -1,
    ):
        if total_steps is None or total_steps < 1:
            raise ValueError(f"WarmupCosineLR needs `total_steps` >= 1, got {total_steps}.")
        warmup = (
            int(round(warmup_steps * total_steps))
            if isinstance(warmup_steps, float)
            else int(warmup_steps)
        )
        if not 0 <= warmup < total_steps:
            raise ValueError(
                f"`warmup_steps` ({warmup_steps}) must be below `total_steps` ({total_steps})."
            )
        self.total_steps, self.warmup_steps = total_steps, warmup

        def factor(step: int) -> float:
            if step < warmup:
                return warmup_start_factor + (1 - warmup_start_factor) * step / max(1, warmup)
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor, last_epoch=last_epoch)


def build_optimizers(
    module: torch.nn.Module,
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None,
    total_steps: int | None,
    interval: Literal["epoch", "step"] | None = None,
    monitor: str = "val/loss",
    param_groups: list[tuple[list[torch.nn.Parameter], float]] | None = None,
) -> Optimizer | dict:
    """Build what ``configure_optimizers`` returns from an optimizer and a scheduler factory.

    Only parameters with ``requires_grad`` are given to the optimizer, so freezing callbacks can
    add the rest later as new parameter groups.

    Args:
        module: the model whose trainable parameters are optimized.
        optimizer: a callable taking the parameters, e.g. ``torch.optim.AdamW`` or a
            ``partial(torch.optim.SGD, lr=0.1, momentum=0.9)``.
        scheduler: a callable taking the optimizer, or ``None``.
        total_steps: optimizer steps in the run, injected into schedulers that take
            ``total_steps`` (``OneCycleLR``, ``WarmupCosineLR``) when the config leaves it unset.
        interval: ``"step"`` or ``"epoch"``; default: per step for ``OneCycleLR`` and
            ``WarmupCosineLR``, per epoch for the rest.
        monitor: the logged metric ``ReduceLROnPlateau`` watches.
        param_groups: the optimizer's parameter groups as ``(parameters, scale)``, the first
            one's at the configured rate and each other at ``scale`` x it (a fine-tuning
            callback's :meth:`~lifecycle.training.finetuning.Finetuning.optimizer_groups`,
            frozen parameters included); default: one group of the trainable parameters.
    """
    if param_groups is None:
        param_groups = [([p for p in module.parameters() if p.requires_grad], 1.0)]
    if not param_groups[0][0]:
        raise ValueError("No trainable parameters: every parameter has requires_grad=False.")
    if len(param_groups) == 1:
        opt = optimizer(param_groups[0][0])
    else:
        opt = optimizer([{"params": params} for params, _ in param_groups])
    scales = [scale for _, scale in param_groups]
    _scale_groups(opt, scales)
    if scheduler is None:
        return opt
    cls = factory_target(scheduler)
    takes_total = "total_steps" in inspect.signature(cls).parameters
    kwargs = {}
    if (
        takes_total
        and factory_keyword(scheduler, "total_steps") is None
        and factory_keyword(scheduler, "epochs") is None
    ):
        if total_steps is None or total_steps == float("inf"):
            raise ValueError(
                f"{cls.__name__} needs `total_steps`, and the number of steps is unknown (no max_epochs/max_steps). "
                "Fix: set `trainer.max_epochs` or `trainer.max_steps`, or the scheduler's `total_steps`."
            )
        kwargs["total_steps"] = int(total_steps)
    sched = scheduler(opt, **kwargs)
    # a scheduler given one rate for every group (OneCycleLR's max_lr) sets each group's alike
    _scale_groups(opt, scales)
    if interval is None:
        interval = "step" if isinstance(sched, STEP_WISE + (WarmupCosineLR,)) else "epoch"
    config = {"scheduler": sched, "interval": interval}
    if isinstance(sched, ReduceLROnPlateau):
        config["monitor"] = monitor
    return {"optimizer": opt, "lr_scheduler": config}


def _scale_groups(opt: Optimizer, scales: list[float]) -> None:
    """Set every learning-rate entry (``lr``, and a scheduler's ``initial_lr``, ``max_lr``,
    ``min_lr``, ...) of group ``k`` to ``scales[k]`` x the first group's."""
    first = opt.param_groups[0]
    for group, scale in zip(opt.param_groups[1:], scales[1:], strict=True):
        for key, value in first.items():
            if "lr" in key and isinstance(value, float | int) and not isinstance(value, bool):
                group[key] = value * scale


def finetuning_groups(module) -> list[tuple[list[torch.nn.Parameter], float]] | None:
    """The parameter groups the Trainer's fine-tuning callback declares for ``module``
    (:meth:`~lifecycle.training.finetuning.Finetuning.optimizer_groups`), or ``None``."""
    for callback in module.trainer.callbacks:
        declare = getattr(callback, "optimizer_groups", None)
        if callable(declare):
            return declare(module)
    return None


def configure_stage_optimizers(module, monitor: str = "val/loss"):
    """``configure_optimizers`` of a stage holding ``optimizer_factory``, ``scheduler_factory``
    and ``scheduler_interval``: :func:`build_optimizers` with the Trainer's step count and the
    parameter groups of its fine-tuning callback."""
    return build_optimizers(
        module,
        module.optimizer_factory,
        module.scheduler_factory,
        total_steps=module.trainer.estimated_stepping_batches,
        interval=module.scheduler_interval,
        monitor=monitor,
        param_groups=finetuning_groups(module),
    )
