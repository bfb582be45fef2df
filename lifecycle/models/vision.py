"""Image backbones: an MLP, a small CNN and a small ResNet.

A backbone maps a batch of inputs to features and says its feature size in ``out_features``;
a stage LightningModule puts a head on top (see :mod:`lifecycle.models.heads`). Any
``nn.Module`` with ``out_features`` plugs in the same way, from the user's own project, by
``class_path``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lifecycle.models.base import Backbone


def _activation(name: str) -> nn.Module:
    choices = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
    if name not in choices:
        raise ValueError(f"`activation` must be one of {sorted(choices)}, got {name!r}.")
    return choices[name]()


class MLP(Backbone):
    """A multilayer perceptron on flattened inputs (images or tabular features).

    Args:
        in_features: size of one flattened input (e.g. 784 for 28x28 grey images, 10 for 10 features).
        hidden: width of each hidden layer; ``out_features`` is the last one.
        dropout: dropout after each hidden layer.
        activation: ``relu``, ``gelu``, ``silu`` or ``tanh``.
        batch_norm: add BatchNorm after each linear layer.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
        activation: str = "relu",
        batch_norm: bool = False,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("`hidden` needs at least one layer width.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h)]
            if batch_norm:
                layers += [nn.BatchNorm1d(h)]
            layers += [_activation(activation), nn.Dropout(dropout)]
            width = h
        self.layers = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        if flat.shape[1] != self.in_features:
            raise ValueError(
                f"MLP expects inputs of {self.in_features} values, got {tuple(x.shape[1:])} = {flat.shape[1]}. "
                f"Fix: set `in_features: {flat.shape[1]}` on the backbone."
            )
        return self.layers(flat)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(Backbone):
    """A VGG-style CNN: blocks of 3x3 conv + BatchNorm + ReLU, each block ending in max-pooling.

    Works on any image size: after the blocks an adaptive average pool brings the feature map to
    ``pool_size`` x ``pool_size`` before a fully connected layer of ``hidden`` units.

    Args:
        in_channels: 1 for grey images, 3 for RGB.
        channels: output channels of each block (each block halves the resolution).
        convs_per_block: 3x3 convolutions in each block.
        pool_size: spatial size kept before the fully connected layer.
        hidden: width of the fully connected layer; this is ``out_features``.
        dropout: dropout after each block (``dropout / 2``) and after the dense layer.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64),
        convs_per_block: int = 2,
        pool_size: int = 4,
        hidden: int = 256,
        dropout: float = 0.25,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in channels:
            for i in range(convs_per_block):
                layers += _conv_bn(cin if i == 0 else cout, cout)
            layers += [nn.MaxPool2d(2), nn.Dropout(dropout / 2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * pool_size * pool_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.in_channels = in_channels
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, self.in_channels)
        return self.dense(self.pool(self.features(x)))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with a shortcut (projected when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cout, stride),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class SmallResNet(Backbone):
    """A small ResNet for low-resolution images: a 3x3 stem, stages of basic blocks, global pooling.

    Args:
        in_channels: 1 for grey images, 3 for RGB.
        widths: channels of each stage; every stage after the first halves the resolution.
        blocks_per_stage: basic blocks in each stage.
        dropout: dropout on the pooled features.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = _conv_bn(in_channels, widths[0])
        cin = widths[0]
        for s, cout in enumerate(widths):
            for b in range(blocks_per_stage):
                layers.append(BasicBlock(cin, cout, stride=2 if (s > 0 and b == 0) else 1))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.in_channels = in_channels
        self.out_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, self.in_channels)
        return self.pool(self.stages(x))


def _check_channels(x: torch.Tensor, expected: int) -> None:
    if x.ndim != 4 or x.shape[1] != expected:
        raise ValueError(
            f"The backbone expects images of shape (B, {expected}, H, W), got {tuple(x.shape)}. "
            f"Fix: set the backbone's `in_channels` to the data's channels."
        )
