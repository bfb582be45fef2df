"""Heads map a backbone's features to outputs (class logits, regression values)."""

from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    """Dropout then one linear layer.

    Args:
        in_features: the backbone's ``out_features``.
        out_features: classes for classification, targets for regression.
        dropout: dropout applied to the features before the linear layer.
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
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
