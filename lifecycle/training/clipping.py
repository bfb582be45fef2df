"""Gradient clipping that works under every Lightning strategy.

``Trainer(gradient_clip_val=..., gradient_clip_algorithm="norm" | "value")`` calls the
LightningModule's ``configure_gradient_clipping`` hook. Lightning's default implementation clips
through its precision plugin with ``torch.nn.utils.clip_grad_norm_``, which is unsupported or
must be checked when the gradients are sharded:

- ``FSDPStrategy`` (FSDP1) raises for clipping by norm (Lightning#19235): the global norm must
  come from the FSDP root module's ``clip_grad_norm_``, which Lightning's precision plugin
  cannot reach. Here the root is the strategy's wrapped model.
- ``ModelParallelStrategy`` (FSDP2): each rank holds a shard of every gradient (a ``DTensor``)
  and the norm must be that of the whole gradients. Here the total norm is computed on the
  DTensors and made whole (one all-reduce) before every rank scales its shard by the same
  factor, as torchtitan does. (Older torch releases took the norm of the local shards,
  pytorch#170862; on torch 2.13 Lightning's default gives the same result as this, measured.)
- DeepSpeed clips by norm inside its engine (Lightning passes ``gradient_clip_val`` to its
  config); it has no clipping by value, which is an error here rather than silently ignored.

Clipping by value is element-wise, so it is correct on local shards under every strategy.

:class:`ShardedClipping` is a mixin that installs this as ``configure_gradient_clipping``; the
toolkit's stages use it, and a user's own LightningModule gets the same by inheriting it.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


def _parameters(optimizer: Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def total_grad_norm(parameters: list[torch.Tensor], norm_type: float = 2.0) -> torch.Tensor:
    """The norm of all gradients of ``parameters`` together, correct when they are sharded
    DTensors (each rank then holds the same, global value)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads, norm_type=norm_type)
    full_tensor = getattr(norm, "full_tensor", None)  # a DTensor with a pending reduction
    return full_tensor() if full_tensor is not None else norm


def clip_grad_norm(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients so their global 2-norm is at most ``max_norm``; returns the norm
    before clipping. Works on plain tensors and on FSDP2's sharded DTensors."""
    norm = total_grad_norm(parameters)
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)  # skips missing gradients
    return norm


def clip_gradients(
    module, optimizer: Optimizer, clip_val: float | None, algorithm: str | None
) -> torch.Tensor | None:
    """Clip ``optimizer``'s gradients by ``algorithm`` (``norm``, default, or ``value``) at
    ``clip_val``, the way ``module``'s Trainer strategy needs (see the module docstring).
    Returns the gradient norm before clipping when clipping by norm, else ``None``."""
    if not clip_val:
        return None
    algorithm = algorithm or "norm"
    if algorithm not in ("norm", "value"):
        raise ValueError(f"`gradient_clip_algorithm` must be 'norm' or 'value', got {algorithm!r}.")
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    strategy = module.trainer.strategy
    if isinstance(strategy, DeepSpeedStrategy):
        if algorithm == "value":
            raise ValueError(
                "DeepSpeed cannot clip gradients by value (its engine only clips by norm). "
                "Fix: set `trainer.gradient_clip_algorithm: norm`, or use DDP or FSDP."
            )
        return None  # DeepSpeed's engine clips by norm with the value Lightning gave it
    if algorithm == "value":
        parameters = _parameters(optimizer)
        if parameters:  # none after a skipped step (GradientHealth); torch refuses an empty list
            torch.nn.utils.clip_grad_value_(parameters, clip_val)
        return None
    if isinstance(strategy, FSDPStrategy):
        # FSDP1: the root module computes the global norm across the shards
        return strategy.model.clip_grad_norm_(clip_val)
    return clip_grad_norm(_parameters(optimizer), clip_val)


class ShardedClipping:
    """Mixin for a LightningModule: ``Trainer(gradient_clip_val=...)`` then clips correctly
    under DDP, FSDP1, FSDP2 (``ModelParallelStrategy``) and DeepSpeed, by norm or by value."""

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
