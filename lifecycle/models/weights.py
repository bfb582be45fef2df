"""Filling a network with saved weights, and where a pretrained network came from.

The lowest layer of :mod:`lifecycle.models`: the backbones that load their own pretrained
weights (:class:`~lifecycle.models.EfficientNetLite0`,
:class:`~lifecycle.models.PretrainedTransformer`) use it, and so does
:mod:`lifecycle.artifacts`, which re-exports both names; it imports nothing of the toolkit, so
neither depends on the other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class PretrainedInfo:
    """Where a loaded backbone came from (``backbone.pretrained``).

    Attributes:
        folder: the pretrained folder (or weights file).
        manifest: its manifest (or a short description of the source).
        mean: the per-channel normalization the images were pretrained with.
        std: its standard deviation.
        tokenizer: the folder of the tokenizer the texts were pretrained with.
        notes: anything else worth saying about it.
    """

    folder: Path
    manifest: dict
    mean: list[float] | None = None
    std: list[float] | None = None
    tokenizer: Path | None = None
    notes: list[str] = field(default_factory=list)


def load_state(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True
) -> dict[str, list[str]]:
    """``module.load_state_dict(state)`` with an error listing every missing, unexpected and
    mis-shaped key.

    Args:
        module: the network to fill.
        state: the weights.
        source: where they came from (named in messages).
        strict: missing or unexpected keys are an error; with ``False`` they are logged and
            returned, and the rest is loaded. Mis-shaped keys are always an error.

    Returns:
        ``{"missing": [...], "unexpected": [...]}``.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: saved {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(own[k].shape) != tuple(state[k].shape)
    ]
    listed = {"missing": missing, "unexpected": unexpected, "mis-shaped": shapes}
    report = "; ".join(
        f"{len(items)} {title}: {items[:10]}"
        + (f" (+{len(items) - 10} more)" if len(items) > 10 else "")
        for title, items in listed.items()
        if items
    )
    if shapes or (strict and (missing or unexpected)):
        raise ValueError(
            f"The weights in {source} do not fit {type(module).__name__}: {report}. "
            "Fix: build the model with the arguments the weights were saved from"
            + (" (a key_map renames saved keys)." if missing or unexpected else ".")
        )
    if missing or unexpected:
        log.warning(f"Loaded {source} into {type(module).__name__}, not strictly: {report}.")
    module.load_state_dict(state, strict=False)
    return {"missing": missing, "unexpected": unexpected}
