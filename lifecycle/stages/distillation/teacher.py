"""Distillation teachers: a trained classifier loaded frozen, and what it was trained with (its
tokenizer, its image normalization)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lifecycle.compat import checkpoint_instantiator
from lifecycle.errors import ConfigError, MissingFileError
from lifecycle.interfaces import AcceptsDataNeeds, optional
from lifecycle.stages.classification import ClassificationModule


class TransformersClassifier(nn.Module):
    """A ``transformers`` sequence-classification model from a local folder as a teacher:
    ``forward(input_ids, attention_mask)`` returns its logits. The folder's tokenizer is the
    teacher's (``tokenizer``); no code from the folder runs (``trust_remote_code`` off).

    Args:
        path: the folder ``save_pretrained`` wrote (or a packaged model's name).
    """

    input_keys = ["input_ids", "attention_mask"]

    def __init__(self, path: str):
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        from lifecycle.models.text import read_transformers_folder

        folder, config = read_transformers_folder(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), config=config, local_files_only=True, trust_remote_code=False
        )
        self.num_classes = config.num_labels
        self.tokenizer = folder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def load_teacher(path: str) -> nn.Module:
    """A trained teacher, frozen, from a toolkit checkpoint or a ``transformers`` folder.

    - A ``.ckpt`` written by a ``lifecycle fit`` run (a classification stage): the module is
      rebuilt from the hyperparameters its recipe recorded, with the checkpoint's weights. The
      DataModule state saved with it gives the teacher's tokenizer (text) or normalization
      (images), so the student's data can differ in both.
    - A folder written by ``save_pretrained`` of a sequence-classification model (or a packaged
      model's name): see :class:`TransformersClassifier`.

    Args:
        path: the checkpoint file or the transformers folder.

    Returns:
        The teacher in eval mode, without gradients.

    Raises:
        MissingFileError: nothing at ``path``.
        ConfigError: a checkpoint whose module cannot be rebuilt from it, or that is not a
            classifier.
        UnsafeLoadError: a checkpoint whose hyperparameters name a module that is not a
            ``LightningModule``, or classes inside it that are not networks, optimizers or
            schedulers (refused before anything is built).
    """
    target = Path(path)
    if target.is_dir() or not target.suffix:
        teacher = TransformersClassifier(path)
    elif not target.is_file():
        raise MissingFileError(
            f"Teacher checkpoint {target.resolve()} does not exist. Fix: point `path` at a "
            "classification run's checkpoint (runs/<run>/version_N/checkpoints/*.ckpt) or at a "
            "transformers folder."
        )
    else:
        teacher = _load_checkpoint_teacher(target)
    return teacher.eval().requires_grad_(False)


def _load_checkpoint_teacher(path: Path) -> nn.Module:
    import lightning as L

    from lifecycle.artifacts import check_checkpoint, checkpoint_globals

    # refuses, before anything is built, a checkpoint naming anything but networks
    checkpoint = check_checkpoint(path)
    if checkpoint_instantiator(checkpoint.get("hyper_parameters", {})) is None:
        raise ConfigError(
            f"{path} was written by a module built in Python, so it does not record how to "
            "rebuild its backbone. Fix: build the teacher in Python (load the weights with "
            "`load_state_dict`) and pass the module as `teacher`, or train the teacher from a "
            "recipe (`lifecycle fit --config ...`)."
        )
    with torch.serialization.safe_globals(checkpoint_globals(path)):
        module = L.LightningModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    if not isinstance(module, ClassificationModule):
        raise ConfigError(
            f"{path} holds a {type(module).__name__}, not a classifier: a teacher must output "
            "class logits. Fix: give a checkpoint of a classification run."
        )
    for state in checkpoint.values():
        if not isinstance(state, dict):
            continue
        # a DataModule's saved state holds its tokenizer's files; its hyperparameters
        # (`datamodule_hyper_parameters`) may hold a tokenizer's name, which is not that
        if isinstance(state.get("tokenizer"), dict):
            from lifecycle.data.tokenization import tokenizer_from_state

            module.tokenizer = tokenizer_from_state(state["tokenizer"])
        if state.get("mean") is not None and "eval_transforms" in state:
            module.normalization = (list(state["mean"]), list(state["std"]))
    return module


def teacher_tokenizer(teacher: nn.Module):
    """The tokenizer a teacher was trained with (an object, a folder or a packaged model's
    name), or ``None``: its own ``tokenizer`` (:func:`load_teacher` sets it), else the one its
    backbone was pretrained with (``backbone.pretrained.tokenizer``)."""
    found = optional(teacher, "tokenizer")
    if found is None:
        found = optional(optional(optional(teacher, "backbone"), "pretrained"), "tokenizer")
    return found


def teacher_normalization(teacher: nn.Module) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` an image teacher was trained with (:func:`load_teacher` reads it from
    the checkpoint's DataModule state), or ``None``."""
    return optional(teacher, "normalization")


def parameter_count(module: nn.Module) -> int:
    """All parameters of ``module``, trainable or not."""
    return sum(p.numel() for p in module.parameters())


def renormalization(
    teacher: tuple[list[float], list[float]] | None,
    mean: list[float] | None,
    std: list[float] | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, shift)`` that map images normalized with the student's ``mean``/``std`` to the
    ``teacher``'s ``(mean, std)``: ``x_t = x * scale + shift = (x * std_s + mean_s - mean_t) /
    std_t``, each ``(1, channels, 1, 1)``; ``None`` when either is unknown or they are equal."""
    if teacher is None or mean is None or std is None:
        return None
    t_mean, t_std = (torch.as_tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in teacher)
    s_mean, s_std = (torch.as_tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (mean, std))
    if torch.allclose(t_mean, s_mean) and torch.allclose(t_std, s_std):
        return None
    return s_std / t_std, (s_mean - t_mean) / t_std


def check_teacher_tokenization(teacher: nn.Module, datamodule) -> None:
    """Refuse a DataModule that cannot take a stage's data needs (no ``apply_data_needs``)
    when ``teacher`` tokenizes with another vocabulary than the data: the teacher would read
    the student's ids as other words. A DataModule that takes the needs
    (:class:`~lifecycle.interfaces.AcceptsDataNeeds`) decided for itself in its ``setup``.

    Raises:
        ConfigError: naming the DataModule and the fix.
    """
    tokenizer = teacher_tokenizer(teacher)
    if tokenizer is None or datamodule is None or isinstance(datamodule, AcceptsDataNeeds):
        return
    data_tokenizer = optional(datamodule, "tokenizer")
    if data_tokenizer is None:
        return
    if not hasattr(tokenizer, "get_vocab"):  # a folder or a packaged model's name
        from lifecycle.data.tokenization import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    if tokenizer.get_vocab() != data_tokenizer.get_vocab():
        raise ConfigError(
            f"The teacher tokenizes with its own vocabulary ({len(tokenizer)} tokens) but "
            f"{type(datamodule).__name__} cannot add the teacher's tokenization to batches. "
            "Fix: use lifecycle.data.TextClassificationDataModule, or give yours an "
            "`apply_data_needs(needs)` method (lifecycle.interfaces.AcceptsDataNeeds) that adds "
            "`teacher_input_ids` and `teacher_attention_mask` to training batches for "
            "`needs.teacher_tokenizer`."
        )
