"""Heads map a backbone's features to outputs (class logits, regression values)."""

from __future__ import annotations

import torch
from torch import nn

from lifecycle.errors import ConfigError


class LinearHead(nn.Module):
    """Dropout then one linear layer.

    Args:
        in_features: the backbone's ``out_features``; ``None`` (or left out in YAML) for the
            stage to fill in from its backbone when it is built (:meth:`size_to`).
        out_features: classes for classification, targets for regression.
        dropout: dropout applied to the features before the linear layer.
    """

    def __init__(
        self, in_features: int | None = None, out_features: int | None = None, dropout: float = 0.0
    ):
        super().__init__()
        if not isinstance(out_features, int) or out_features < 1:
            raise ConfigError(
                f"LinearHead needs `out_features` (a positive int), got {out_features!r}. Fix: "
                "set the head's `init_args.out_features` (the classes, or 1 for regression)."
            )
        self.dropout = nn.Dropout(dropout)
        self.out_features = out_features
        self.in_features: int | None = None
        if in_features is not None:
            self.size_to(in_features)

    def size_to(self, in_features: int) -> None:
        """Build the linear layer for ``in_features`` features (the stage calls it with its
        backbone's ``out_features`` when ``in_features`` was left unset)."""
        self.in_features = in_features
        self.linear = nn.Linear(in_features, self.out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.in_features is None:
            raise RuntimeError(
                "LinearHead(in_features=None) was never sized: a stage sizes it to its backbone's "
                "`out_features` when built. Fix: pass it to a stage, or set `in_features`."
            )
        return self.linear(self.dropout(features))


def feature_size(backbone: nn.Module) -> int:
    """A backbone's feature size, read from its ``out_features``."""
    size = getattr(backbone, "out_features", None)
    if not isinstance(size, int):
        raise ValueError(
            f"Backbone {type(backbone).__name__} has no integer `out_features` attribute, so no head can be "
            "sized for it. Fix: set `self.out_features = <feature size>` in the backbone, or pass a `head`."
        )
    return size
