"""``GradientHealth``: gradient norms logged, vanishing and exploding gradients reported, and a
step with a NaN or Inf gradient skipped or the run stopped, with the step and the layer named."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or Inf and ``GradientHealth(on_nonfinite="stop")`` stopped the run."""


def _local(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The local shard of a (possibly sharded DTensor) gradient, and whether it was sharded."""
    to_local = getattr(t, "to_local", None)
    return (to_local(), True) if to_local is not None else (t, False)


class GradientHealth(L.Callback):
    """Watch the gradients of every optimizer step, after backward and before clipping.

    Logs ``grad_norm/global`` and, with ``per_layer``, ``grad_norm/<layer>`` (2-norms) every
    ``log_every_n_steps`` steps. Warns when gradients vanish (the global norm below
    ``vanishing_below`` for ``vanishing_steps`` steps in a row) or explode (above
    ``exploding_above``), naming the layers with the smallest or largest norms. When a gradient
    holds NaN or Inf (e.g. after a NaN loss), ``on_nonfinite`` decides: ``skip`` drops that step
    (the weights stay as they were) and warns with the step, the loss and the layers; ``stop``
    raises :class:`NonFiniteGradientError` with the same message. ``max_consecutive_skips``
    skipped steps in a row stop the run too: the model would not recover.

    A layer is the module that owns the parameters (``backbone.features.0``); ``depth`` groups
    them by the first ``depth`` parts of the name instead (``depth: 2`` -> ``backbone.features``).
    Works under DDP (gradients are already averaged) and FSDP2 (sharded gradients are summed over
    the ranks in one all-reduce), so every rank takes the same decision.

    Not ``lightning.pytorch.utilities.grad_norm``: it gives the same global norm (up to float
    rounding, tested) but one norm per parameter, not per layer, and does not sum FSDP2 shards.

    Args:
        log_every_n_steps: logging interval (default: the Trainer's ``log_every_n_steps``).
        per_layer: log each layer's norm too, not only the global one.
        depth: group parameters by this many leading parts of their names.
        vanishing_below: global norm under which gradients count as vanishing.
        vanishing_steps: consecutive vanishing steps before the warning.
        exploding_above: global norm above which gradients count as exploding.
        on_nonfinite: ``skip`` or ``stop``.
        max_consecutive_skips: skipped steps in a row that stop the run.

    Attributes:
        events: every warning or skip as ``(step, kind, message)``, for reports and tests.
    """

    def __init__(
        self,
        log_every_n_steps: int | None = None,
        per_layer: bool = True,
        depth: int | None = None,
        vanishing_below: float = 1e-7,
        vanishing_steps: int = 50,
        exploding_above: float = 1e3,
        on_nonfinite: Literal["skip", "stop"] = "skip",
        max_consecutive_skips: int = 20,
    ):
        if on_nonfinite not in ("skip", "stop"):
            raise ValueError(f"`on_nonfinite` must be 'skip' or 'stop', got {on_nonfinite!r}.")
        if vanishing_below < 0 or exploding_above <= vanishing_below:
            raise ValueError(
                "Need 0 <= `vanishing_below` < `exploding_above`; got "
                f"{vanishing_below} and {exploding_above}."
            )
        self.log_every_n_steps = log_every_n_steps
        self.per_layer = per_layer
        self.depth = depth
        self.vanishing_below = vanishing_below
        self.vanishing_steps = vanishing_steps
        self.exploding_above = exploding_above
        self.on_nonfinite = on_nonfinite
        self.max_consecutive_skips = max_consecutive_skips
        self.events: list[tuple[int, str, str]] = []
        self._loss: torch.Tensor | None = None
        self._vanishing_run = 0
        self._skips_in_a_row = 0
        self._exploding = 0

    # ------------------------------------------------------------------ norms
    def _layer(self, name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[: self.depth] if self.depth else parts[:-1]) or name

    def layer_norms(self, pl_module: L.LightningModule) -> OrderedDict[str, float]:
        """The 2-norm of each layer's gradients (global over the ranks when sharded)."""
        names: list[str] = []
        squares: list[torch.Tensor] = []
        sharded = False
        index: dict[str, int] = {}
        for name, p in pl_module.named_parameters():
            if p.grad is None:
                continue
            grad, is_shard = _local(p.grad)
            sharded |= is_shard
            layer = self._layer(name)
            square = grad.detach().float().pow(2).sum()
            if layer in index:
                squares[index[layer]] = squares[index[layer]] + square
            else:
                index[layer] = len(names)
                names.append(layer)
                squares.append(square)
        if not names:
            return OrderedDict()
        total = torch.stack(squares)
        if sharded and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)  # each rank holds a shard of each gradient
        return OrderedDict(zip(names, total.sqrt().tolist(), strict=True))

    # ------------------------------------------------------------------ hooks
    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        norms = self.layer_norms(pl_module)
        if not norms:
            return
        step = trainer.global_step
        bad = [name for name, value in norms.items() if not math.isfinite(value)]
        if bad:
            self._nonfinite(trainer, pl_module, optimizer, step, bad)
            return
        self._skips_in_a_row = 0
        total = math.sqrt(sum(v * v for v in norms.values()))
        every = self.log_every_n_steps or trainer.log_every_n_steps or 50
        if step % every == 0:
            logged = {"grad_norm/global": total}
            if self.per_layer:
                logged.update({f"grad_norm/{k}": v for k, v in norms.items()})
            pl_module.log_dict(logged, on_step=True, on_epoch=False)
        if total > self.exploding_above:
            self._exploding += 1
        # the 1st, 2nd, 4th, 8th... exploding step is reported, not every one
        if total > self.exploding_above and self._exploding & (self._exploding - 1) == 0:
            top = sorted(norms.items(), key=lambda kv: -kv[1])[:3]
            self._warn(
                step, "exploding",
                f"Exploding gradients at step {step} (the {self._exploding}. such step): "
                f"global norm {total:.3g} > "
                f"{self.exploding_above:g}; largest in "
                + ", ".join(f"{k} ({v:.3g})" for k, v in top)
                + ". Fix: lower the learning rate or set `trainer.gradient_clip_val`.",
            )  # fmt: skip
        if total < self.vanishing_below:
            self._vanishing_run += 1
            if self._vanishing_run == self.vanishing_steps:
                low = sorted(norms.items(), key=lambda kv: kv[1])[:3]
                self._warn(
                    step, "vanishing",
                    f"Vanishing gradients: global norm below {self.vanishing_below:g} for "
                    f"{self.vanishing_steps} steps (to step {step}); smallest in "
                    + ", ".join(f"{k} ({v:.3g})" for k, v in low)
                    + ". Fix: raise the learning rate, check the loss and the activations "
                    "(saturated sigmoid/tanh), or add normalization or residual connections.",
                )  # fmt: skip
        else:
            self._vanishing_run = 0

    def _nonfinite(self, trainer, pl_module, optimizer, step: int, bad: list[str]) -> None:
        loss = float(self._loss) if self._loss is not None else float("nan")
        more = f" and {len(bad) - 1} more layers" if len(bad) > 1 else ""
        message = (
            f"Non-finite gradient at step {step} (epoch {trainer.current_epoch}) in "
            f"{bad[0]}{more} (the first in the module's order); the loss was {loss:.4g}."
        )
        if self.on_nonfinite == "stop":
            self.events.append((step, "stop", message))
            raise NonFiniteGradientError(
                message + " Stopped (GradientHealth on_nonfinite: stop). Fix: lower the learning "
                "rate, set `trainer.gradient_clip_val`, check the data for NaN or Inf, or use "
                "`on_nonfinite: skip` to drop such steps."
            )
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # the optimizer leaves parameters without a gradient untouched
        self._skips_in_a_row += 1
        self._warn(step, "skip", message + " Skipped this step; the weights are unchanged.")
        if self._skips_in_a_row >= self.max_consecutive_skips:
            raise NonFiniteGradientError(
                f"{self._skips_in_a_row} steps in a row had non-finite gradients (the last: "
                f"{message}) The run cannot recover. Fix: lower the learning rate, set "
                "`trainer.gradient_clip_val`, or check the data for NaN or Inf."
            )

    def _warn(self, step: int, kind: str, message: str) -> None:
        self.events.append((step, kind, message))
        rank_zero_warn(message)
