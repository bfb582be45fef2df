"""Fine-tuning strategies: callbacks on Lightning's ``BaseFinetuning`` that decide which parts of
a pretrained backbone train, when, and at what learning rate.

Add one to ``trainer.callbacks`` (any stage with a ``backbone`` and a head: classification,
regression)::

    trainer:
      callbacks:
        - class_path: lifecycle.training.finetuning.GradualUnfreezing
          init_args: {lr_decay: 0.38}

========================  ================================================================
no callback               full fine-tuning: every weight trains at the optimizer's rate
:class:`LinearProbe`      the backbone fixed (weights, BatchNorm statistics, dropout off);
                          only the head trains
:class:`FreezeUnfreeze`   the head alone until epoch N, then the whole backbone at
                          ``backbone_lr_scale`` x the head's rate
:class:`GradualUnfreezing` ULMFiT (Howard & Ruder 2018): one layer group more per epoch,
                          from the top, each group below at ``lr_decay`` x the rate above
:class:`DiscriminativeLR` everything trains from the start, layer group ``k`` from the top at
                          ``lr_decay ** (k + 1)`` x the head's rate
========================  ================================================================

Layer groups come from the backbone's ``layer_groups()`` (bottom to top: the toolkit's
Transformer and EfficientNet backbones have one), else from its top-level children.

**Learning-rate schedules stay right.** Every parameter group exists from the first step: the
callback declares them (:meth:`Finetuning.optimizer_groups`) and the stages' optimizer
(:func:`lifecycle.training.optim.build_optimizers`) is built with them, each at ``scale`` x the
head's rate (its ``lr``, and the ``initial_lr``/``max_lr``/``min_lr`` a scheduler keeps in the
group), before and after the scheduler is built. A frozen group's parameters have no gradient,
so the optimizer leaves them alone (no update, no weight decay, no state) while its rate follows
the schedule; unfreezing only sets ``requires_grad``, and no scheduler is edited. Lightning
Flash broke here (adding a group to an optimizer whose ``LambdaLR`` was built without it).

**Distributed.** Under DDP, parameters frozen when DDP wrapped the model are outside its
gradient all-reduce; once unfrozen, their gradients are averaged over the processes by this
callback after each backward, so the replicas stay identical. FSDP2 (``ModelParallelStrategy``)
syncs whatever requires a gradient at each backward. DeepSpeed is refused (Lightning's
``BaseFinetuning`` does not support it).

**Resuming.** What trains depends on the epoch alone: at each epoch start (also the first of a
resumed run) the callback unfreezes what is due by then.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.optim import Optimizer

from lifecycle.errors import ConfigError

ParamGroups = list[tuple[list[nn.Parameter], float]]


def layer_groups(backbone: nn.Module) -> list[nn.Module]:
    """``backbone`` cut into groups of layers, bottom (input side) to top: its own
    ``layer_groups()`` when it has one, else its top-level children that hold parameters (the
    children of a single ``Sequential``/``ModuleList`` child)."""
    own = getattr(backbone, "layer_groups", None)
    if callable(own):
        groups = list(own())
    else:
        groups = [c for c in backbone.children() if any(True for _ in c.parameters())]
        if len(groups) == 1 and isinstance(groups[0], nn.Sequential | nn.ModuleList):
            groups = [c for c in groups[0].children() if any(True for _ in c.parameters())]
    if not groups:
        raise ValueError(f"{type(backbone).__name__} has no layers with parameters to fine-tune.")
    return groups


def _params(modules: nn.Module | Iterable[nn.Module]) -> list[nn.Parameter]:
    modules = [modules] if isinstance(modules, nn.Module) else list(modules)
    seen, out = set(), []
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


class Finetuning(BaseFinetuning):
    """Base of the fine-tuning strategies: finds the module's backbone and its layer groups,
    adds parameter groups safely for schedulers, and keeps late-unfrozen parameters in sync under
    DDP. Subclasses define ``freeze_before_training`` and ``finetune_function``.

    Args:
        train_bn: train the BatchNorm layers of frozen parts (their affine weights and running
            statistics); ``False`` freezes them with the rest.
        backbone_attr: the LightningModule attribute holding the backbone.
    """

    def __init__(self, train_bn: bool = True, backbone_attr: str = "backbone"):
        super().__init__()
        self.train_bn = train_bn
        self.backbone_attr = backbone_attr
        self._outside_ddp: list[nn.Parameter] = []

    def backbone(self, pl_module: L.LightningModule) -> nn.Module:
        module = getattr(pl_module, self.backbone_attr, None)
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"{type(self).__name__} fine-tunes `{self.backbone_attr}`, which "
                f"{type(pl_module).__name__} does not have. Fix: set the callback's "
                "`backbone_attr` to the attribute holding the pretrained network."
            )
        return module

    def groups(self, pl_module: L.LightningModule) -> list[nn.Module]:
        """The backbone's layer groups, bottom to top."""
        return layer_groups(self.backbone(pl_module))

    def scaled_groups(self, pl_module: L.LightningModule) -> ParamGroups:
        """The parameter groups besides the head's, as ``(parameters, scale)`` (the learning
        rate as a multiple of the head's), created with the optimizer. Default: none."""
        return []

    def head_parameters(self, pl_module: L.LightningModule, taken: set[int]) -> list[nn.Parameter]:
        """The first group's parameters: the trainable ones not in :meth:`scaled_groups`."""
        return [p for p in pl_module.parameters() if p.requires_grad and id(p) not in taken]

    def optimizer_groups(self, pl_module: L.LightningModule) -> ParamGroups:
        """Every parameter group the optimizer is built with, the head's first (scale 1), each
        parameter in one group; called by ``configure_optimizers`` (after
        ``freeze_before_training``) through :func:`lifecycle.training.optim.build_optimizers`."""
        taken: set[int] = set()
        scaled: ParamGroups = []
        for params, scale in self.scaled_groups(pl_module):
            params = [p for p in params if id(p) not in taken]
            taken.update(id(p) for p in params)
            if params:
                scaled.append((params, scale))
        return [(self.head_parameters(pl_module, taken), 1.0), *scaled]

    def unfreeze(
        self,
        pl_module: L.LightningModule,
        optimizer: Optimizer,
        modules: nn.Module | Iterable[nn.Module],
        scale: float,
        label: str,
    ) -> None:
        """Make ``modules`` trainable; their parameters are already in ``optimizer`` (in the
        group at ``scale`` x the head's learning rate)."""
        params = [p for p in _params(modules) if not p.requires_grad]
        if not params:
            return
        self.make_trainable(modules)
        rank_zero_info(
            f"{type(self).__name__}: epoch {pl_module.current_epoch}, {label} trains "
            f"({sum(p.numel() for p in params):,} weights) at {scale:.3g} x the head's "
            "learning rate."
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        present = {
            id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]
        }
        missing = [p for params, _ in self.scaled_groups(pl_module) for p in params]
        missing = [p for p in missing if id(p) not in present]
        if missing:
            raise ConfigError(
                f"{type(self).__name__} unfreezes {sum(p.numel() for p in missing):,} weights of "
                f"`{self.backbone_attr}` that are in no parameter group of the optimizer, so "
                "they would never train. Fix: build the optimizer in `configure_optimizers` with "
                "`lifecycle.training.optim.build_optimizers(..., param_groups="
                "callback.optimizer_groups(self))`, as the toolkit's stages do."
            )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        others = [c for c in trainer.callbacks if isinstance(c, BaseFinetuning) and c is not self]
        if others:
            raise ValueError(
                f"Two fine-tuning callbacks ({type(self).__name__} and "
                f"{', '.join(type(c).__name__ for c in others)}) would both freeze and unfreeze "
                "the backbone. Fix: keep one in `trainer.callbacks`."
            )
        super().setup(trainer, pl_module, stage)
        self._outside_ddp = [p for p in pl_module.parameters() if not p.requires_grad]

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.strategies import DDPStrategy

        if not isinstance(trainer.strategy, DDPStrategy) or trainer.world_size < 2:
            return
        grads = [p.grad for p in self._outside_ddp if p.requires_grad and p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= trainer.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


class LinearProbe(Finetuning):
    """Train the head on a fixed backbone: its weights frozen, and the backbone kept in eval mode
    in training too, so BatchNorm normalizes with its pretrained statistics (and does not update
    them) and dropout is off: the head sees the very features the backbone computes at test
    time. The cheapest measure of how good pretrained features are.

    Args:
        backbone_attr: the LightningModule attribute holding the backbone.
    """

    def __init__(self, backbone_attr: str = "backbone"):
        super().__init__(train_bn=False, backbone_attr=backbone_attr)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(self.backbone(pl_module), train_bn=False)

    def finetune_function(self, pl_module, epoch: int, optimizer: Optimizer) -> None:
        pass

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        backbone = self.backbone(pl_module)
        if backbone.training:  # Lightning puts the whole model in train mode each epoch
            backbone.eval()


class FreezeUnfreeze(Finetuning):
    """Train the head alone on the frozen backbone until epoch ``unfreeze_at_epoch``, then the
    whole backbone as well, at ``backbone_lr_scale`` x the head's learning rate. The head learns
    first, so its random start does not send large gradients into the pretrained weights.

    Args:
        unfreeze_at_epoch: the epoch (0-based) from which the backbone trains.
        backbone_lr_scale: the backbone's learning rate as a multiple of the head's.
        train_bn: train BatchNorm layers while the rest of the backbone is frozen.
        backbone_attr: the LightningModule attribute holding the backbone.
    """

    def __init__(
        self,
        unfreeze_at_epoch: int = 1,
        backbone_lr_scale: float = 0.1,
        train_bn: bool = True,
        backbone_attr: str = "backbone",
    ):
        if unfreeze_at_epoch < 0 or backbone_lr_scale <= 0:
            raise ValueError(
                f"`unfreeze_at_epoch` must be >= 0 and `backbone_lr_scale` > 0, got "
                f"{unfreeze_at_epoch} and {backbone_lr_scale}."
            )
        super().__init__(train_bn=train_bn, backbone_attr=backbone_attr)
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.backbone_lr_scale = backbone_lr_scale

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(self.backbone(pl_module), train_bn=self.train_bn)

    def scaled_groups(self, pl_module: L.LightningModule) -> ParamGroups:
        frozen = [p for p in self.backbone(pl_module).parameters() if not p.requires_grad]
        return [(frozen, self.backbone_lr_scale)]

    def finetune_function(self, pl_module, epoch: int, optimizer: Optimizer) -> None:
        if epoch >= self.unfreeze_at_epoch:
            self.unfreeze(
                pl_module, optimizer, self.backbone(pl_module), self.backbone_lr_scale, "backbone"
            )


class GradualUnfreezing(Finetuning):
    """ULMFiT's gradual unfreezing (Howard & Ruder 2018): the head alone first, then one layer
    group more every ``every`` epochs, from the top of the backbone down; the group ``k`` places
    below the top trains at ``lr_decay ** (k + 1)`` x the head's learning rate (ULMFiT: 1/2.6 =
    0.38; 1.0 gives every group the head's rate). Later layers, whose features are the most
    task-specific, adapt first; the general lower layers last and gentlest.

    Args:
        start_epoch: the epoch (0-based) at which the top group starts training.
        every: epochs between two unfreezings.
        lr_decay: learning-rate factor from one group to the one below.
        train_bn: train BatchNorm layers of still-frozen groups.
        backbone_attr: the LightningModule attribute holding the backbone.
    """

    def __init__(
        self,
        start_epoch: int = 1,
        every: int = 1,
        lr_decay: float = 1.0,
        train_bn: bool = True,
        backbone_attr: str = "backbone",
    ):
        if start_epoch < 0 or every < 1 or not 0 < lr_decay <= 1:
            raise ValueError(
                f"`start_epoch` must be >= 0, `every` >= 1 and `lr_decay` in (0, 1], got "
                f"{start_epoch}, {every} and {lr_decay}."
            )
        super().__init__(train_bn=train_bn, backbone_attr=backbone_attr)
        self.start_epoch, self.every, self.lr_decay = start_epoch, every, lr_decay

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(self.backbone(pl_module), train_bn=self.train_bn)

    def scaled_groups(self, pl_module: L.LightningModule) -> ParamGroups:
        # top first: group k + 1 of the optimizer is the k-th layer group from the top
        top_down = self.groups(pl_module)[::-1]
        return [
            ([p for p in _params(group) if not p.requires_grad], self.lr_decay ** (k + 1))
            for k, group in enumerate(top_down)
        ]

    def finetune_function(self, pl_module, epoch: int, optimizer: Optimizer) -> None:
        if epoch < self.start_epoch:
            return
        top_down = self.groups(pl_module)[::-1]
        due = min(len(top_down), (epoch - self.start_epoch) // self.every + 1)
        for k in range(due):
            label = f"layer group {len(top_down) - k}/{len(top_down)}"
            self.unfreeze(pl_module, optimizer, top_down[k], self.lr_decay ** (k + 1), label)


class DiscriminativeLR(Finetuning):
    """Layer-wise (discriminative) learning rates, nothing frozen: the head at the optimizer's
    rate and backbone layer group ``k`` places below the top at ``lr_decay ** (k + 1)`` x it
    (ULMFiT used 1/2.6 = 0.38; for BERT-style encoders 0.6-0.95 per layer is common). The
    backbone's parameters move out of the optimizer's first group into one group per layer
    group before the first step, so every parameter trains from the start (and under DDP each
    stays in DDP's own gradient sync).

    Args:
        lr_decay: learning-rate factor from one layer group to the one below.
        backbone_attr: the LightningModule attribute holding the backbone.
    """

    def __init__(self, lr_decay: float = 0.5, backbone_attr: str = "backbone"):
        if not 0 < lr_decay <= 1:
            raise ValueError(f"`lr_decay` must be in (0, 1], got {lr_decay}.")
        super().__init__(train_bn=True, backbone_attr=backbone_attr)
        self.lr_decay = lr_decay

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        pass

    def scaled_groups(self, pl_module: L.LightningModule) -> ParamGroups:
        top_down = self.groups(pl_module)[::-1]
        return [
            ([p for p in _params(group) if p.requires_grad], self.lr_decay ** (k + 1))
            for k, group in enumerate(top_down)
        ]

    def head_parameters(self, pl_module: L.LightningModule, taken: set[int]) -> list[nn.Parameter]:
        backbone = self.backbone(pl_module)
        outside = [p for p in backbone.parameters() if p.requires_grad and id(p) not in taken]
        if outside:
            # as before the groups were built up front: only the layer groups train
            rank_zero_warn(
                f"DiscriminativeLR: {sum(p.numel() for p in outside):,} weights of "
                f"`{self.backbone_attr}` are in none of its layer groups and do not train. Fix: "
                "give the backbone a `layer_groups()` that covers every parameter."
            )
        inside = {id(p) for p in backbone.parameters()}
        return [p for p in pl_module.parameters() if p.requires_grad and id(p) not in inside]

    def finetune_function(self, pl_module, epoch: int, optimizer: Optimizer) -> None:
        pass  # every group trains from the first step

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        rates = [g["lr"] for g in trainer.optimizers[0].param_groups]
        rank_zero_info(
            f"DiscriminativeLR: {len(rates) - 1} backbone layer groups at "
            + ", ".join(f"{lr:.3g}" for lr in rates[1:])
            + f" (top first); head at {rates[0]:.3g}."
        )
