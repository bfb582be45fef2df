"""``ContrastivePretrainingModule``: SimCLR (Chen et al. 2020) on unlabeled images.

Each training batch carries ``V >= 2`` independently augmented views of every image
(``batch["views"]``, (B, V, C, H, W); :class:`~lifecycle.data.ImageClassificationDataModule`
with ``views: 2`` and ``train_transforms``). The backbone encodes every view, a projection
head maps the features to a small space, and the NT-Xent loss pulls the views of one image
together and pushes the other images of the batch away. After training the projection head is
dropped: :meth:`ContrastivePretrainingModule.save_pretrained` writes the backbone alone in the
pretrained-backbone format (:mod:`lifecycle.artifacts`) that the fine-tuning stage reads.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lifecycle.artifacts import SavesPretrained
from lifecycle.data.loading import real_records
from lifecycle.interfaces import PRETRAINED_OUTPUTS, RUN_OUTPUTS, StageOutput, optional
from lifecycle.models.heads import feature_size
from lifecycle.stages.supervised import attached_trainer, trainer_datamodule
from lifecycle.training.clipping import ShardedClipping
from lifecycle.training.optim import (
    OptimizerFactory,
    SchedulerFactory,
    configure_stage_optimizers,
)
from lifecycle.training.sharding import data_parallel_mesh, shard_module

log = logging.getLogger(__name__)


def nt_xent(z: torch.Tensor, views: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalized-temperature cross-entropy of SimCLR, for ``views`` views per image.

    Args:
        z: projections, (N * views, D), ordered view-major: rows ``v * N + i`` are the views of
            image ``i``.
        views: views per image (2 in SimCLR; more gives each anchor several positives, whose
            log-probabilities are averaged as in SupCon's "out" form).
        temperature: the softmax temperature of the cosine similarities.

    Returns:
        ``(loss, top1)``: the mean loss over all anchors, and the share of anchors whose most
        similar other row is one of their own views (a label-free sign of learning).
    """
    n = z.shape[0] // views
    with torch.autocast(z.device.type, enabled=False):  # bf16 logits would round to ~2 digits
        z = F.normalize(z.float(), dim=1)
        sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    image = torch.arange(len(z), device=z.device) % n
    positive = (image[:, None] == image[None, :]) & ~eye
    log_prob = sim.log_softmax(dim=1)
    loss = -(log_prob.masked_fill(~positive, 0.0).sum(1) / (views - 1)).mean()
    top1 = positive.gather(1, sim.argmax(dim=1, keepdim=True)).float().mean()
    return loss, top1


class ProjectionHead(nn.Module):
    """SimCLR's MLP projection: ``layers - 1`` blocks of Linear + BatchNorm + ReLU, then a Linear.

    Args:
        in_features: the backbone's ``out_features``.
        hidden: width of the hidden layers.
        out_features: size of the space the loss compares views in.
        layers: linear layers (1 is a linear projection).
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, layers: int = 2):
        super().__init__()
        if layers < 1:
            raise ValueError(f"`projection_layers` must be >= 1, got {layers}.")
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*blocks)
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ContrastivePretrainingModule(SavesPretrained, ShardedClipping, L.LightningModule):
    """SimCLR: contrastive pretraining of an image backbone on unlabeled images.

    Logs ``train/loss`` and ``train/top1`` (the share of views whose nearest neighbour in the
    batch is another view of the same image), and the same for validation as ``val/loss`` and
    ``val/top1`` (validation images get fixed augmented views: see the DataModule's ``views``).
    Labels, when the data has them, are never read. At the end of ``fit`` the backbone is
    written to ``<run folder>/pretrained`` (see :meth:`save_pretrained`).

    Args:
        backbone: any image backbone with ``out_features`` (``SmallCNN``, ``SmallResNet``, yours).
        projection_dim: size of the projection space.
        projection_hidden: width of the projection MLP's hidden layers (default: the backbone's
            ``out_features``).
        projection_layers: linear layers in the projection head (2 in SimCLR, 3 in SimCLRv2).
        temperature: NT-Xent temperature; 0.1-0.5 is usual (lower is sharper).
        gather_negatives: under DDP/FSDP, use the other processes' images as negatives too
            (as SimCLR does), so the loss sees the global batch.
        optimizer: builds the optimizer from the parameters (``torch.optim.AdamW`` by default).
        scheduler: builds a learning-rate scheduler, e.g.
            :class:`~lifecycle.training.optim.WarmupCosineLR` (``total_steps`` filled in).
        scheduler_interval: ``"step"`` or ``"epoch"`` (default per step for one-cycle and
            warm-up cosine).
        channels_last: NHWC convolutions (faster on CPU with oneDNN; same results).
        compile: ``torch.compile`` the backbone.
        save_to: where :meth:`on_fit_end` writes the backbone: a folder, or ``None`` for
            ``<run folder>/pretrained`` (nothing is written without a logger).
    """

    # what a run writes, by name (lifecycle.interfaces.output_paths); `backbone` is the folder
    # the fine-tuning stage loads with lifecycle.artifacts.load_backbone
    outputs: ClassVar[dict[str, StageOutput]] = {**RUN_OUTPUTS, **PRETRAINED_OUTPUTS}
    # what the run's best checkpoint is chosen by (lifecycle.cli's default checkpointing)
    monitor: ClassVar[str] = "val/loss"

    def __init__(
        self,
        backbone: nn.Module,
        projection_dim: int = 128,
        projection_hidden: int | None = None,
        projection_layers: int = 2,
        temperature: float = 0.2,
        gather_negatives: bool = True,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["epoch", "step"] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        save_to: str | None = None,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        self.save_hyperparameters(ignore=["backbone"] if isinstance(backbone, nn.Module) else [])
        from lifecycle.artifacts import standalone_hparams

        standalone_hparams(self.hparams, "backbone", backbone)
        features = feature_size(backbone)
        if channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        if compile:
            # in place: the state_dict keeps its keys, so checkpoints load with or without it
            backbone.compile()
        self.backbone = backbone
        self.projection = ProjectionHead(
            features, projection_hidden or features, projection_dim, projection_layers
        )
        self.temperature = temperature
        self.gather_negatives = gather_negatives
        self.channels_last = channels_last
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.save_to = save_to

    def setup(self, stage: str) -> None:
        """Check that the data can fill a batch: each image is contrasted with the rest of its
        batch, so a split smaller than one batch teaches little (and one image, nothing)."""
        datamodule = trainer_datamodule(self)
        if stage != "fit" or datamodule is None:
            return
        # optional (lifecycle.interfaces.BatchedSplits): a user's DataModule may lack them
        splits, batch_size_for = (
            optional(datamodule, "splits"),
            optional(datamodule, "batch_size_for"),
        )
        if not splits or "train" not in splits or batch_size_for is None:
            log.info(
                f"{type(datamodule).__name__} has no `splits`/`batch_size_for`: not checked "
                "that the training images fill a batch."
            )
            return
        n = len(splits["train"])
        batch = batch_size_for("train")
        if n < 2 or (isinstance(batch, int) and n < batch):
            raise ValueError(
                f"The training split has {n} images but a batch takes {batch}: contrastive "
                "pretraining compares each image with the others in its batch, so the data must "
                f"fill at least one batch. Fix: set `data.init_args.batch_size` to at most {n} "
                "(and above 1), or pretrain on more images."
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of a batch of images (the projection is for training only)."""
        return self.backbone(images)

    def _views(self, batch: dict) -> torch.Tensor:
        views = batch.get("views")
        if views is None or views.ndim != 5 or views.shape[1] < 2:
            shape = None if views is None else tuple(views.shape)
            raise ValueError(
                "Contrastive pretraining needs at least two augmented views of each image in "
                f"batch['views'] (B, V, C, H, W); got {shape}. Fix: set `data.init_args.views: 2` "
                "and `data.init_args.train_transforms` (e.g. the `simclr` preset)."
            )
        return views

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        views = self._views(batch)
        b, v = views.shape[:2]
        x = views.transpose(0, 1).reshape(b * v, *views.shape[2:])  # view-major
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = self.projection(self.backbone(x))
        if stage != "train" and batch.get("padding") is not None:
            # a sharded evaluation loader pads each rank to the same steps: every rank runs the
            # forward, but padded copies are neither anchors nor negatives
            (kept,) = real_records(batch, z.view(v, b, -1).transpose(0, 1))
            b = len(kept)
            if b < 1:
                return z.sum() * 0
            z = kept.transpose(0, 1).reshape(v * b, -1)
        if self.gather_negatives and self.trainer.world_size > 1 and stage == "train":
            z = self.all_gather(z.view(v, b, -1), sync_grads=True)  # (W, V, B, D)
            z = z.transpose(0, 1).reshape(-1, z.shape[-1])
        loss, top1 = nt_xent(z, v, self.temperature)
        train = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=train, on_epoch=True, prog_bar=True, batch_size=b,
                 sync_dist=not train)  # fmt: skip
        self.log(f"{stage}/top1", top1, on_step=False, on_epoch=True, batch_size=b, sync_dist=True)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if "views" in batch:
            self._step(batch, "val")

    def configure_model(self) -> None:
        """Shard the backbone and projection with FSDP2 under ``ModelParallelStrategy``."""
        mesh = data_parallel_mesh(self)
        if mesh is None:
            return
        if self.channels_last:
            self.backbone.to(memory_format=torch.contiguous_format)
        shard_module([self.backbone, self.projection], mesh, owner=self)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written while the backbone was wrapped by ``torch.compile`` (before it
        was compiled in place) have its keys under ``backbone._orig_mod.``: they load too."""
        from lifecycle.artifacts import strip_compiled_prefix

        strip_compiled_prefix(checkpoint.get("state_dict", {}))

    def configure_optimizers(self):
        return configure_stage_optimizers(self)

    # ----------------------------------------------------------------- export
    def save_pretrained(self, folder: str, metrics: dict | None = None) -> None:
        """Write the backbone (projection head dropped), its config, the data's transforms and
        normalization, and a manifest to ``folder`` (see :mod:`lifecycle.artifacts`). Under
        FSDP every process must call it (the shards are gathered); rank 0 writes."""
        from lifecycle.artifacts import full_state_dict, save_backbone

        backbone = self.backbone
        state = full_state_dict(backbone)
        trainer = attached_trainer(self)
        if trainer is None or trainer.is_global_zero:
            datamodule = trainer_datamodule(self)
            save_backbone(
                folder,
                backbone,
                state,
                kind="image",
                backbone_config=self.hparams.get("backbone"),
                datamodule=datamodule,
                produced_by=self.produced_by(metrics),
            )

    def produced_by(self, metrics: dict | None = None) -> dict:
        """The manifest's ``produced_by`` entry: this stage, its settings, its training."""
        trainer = attached_trainer(self)
        return {
            "stage": f"{type(self).__module__}.{type(self).__qualname__}",
            "objective": "simclr",
            "temperature": self.temperature,
            "projection": {"dropped": True, "dim": self.projection.out_features},
            "epochs": trainer.current_epoch if trainer is not None else None,
            "steps": trainer.global_step if trainer is not None else None,
            "metrics": metrics or {},
        }
