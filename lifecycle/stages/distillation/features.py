"""Feature distillation's plumbing (FitNets, Romero et al. 2015): the named layers of the
student and the teacher, forward hooks that record their outputs, and the learned adapters
that project a student feature to the teacher's shape."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from lifecycle.errors import ConfigError

ROLES = ("student", "teacher")


def feature_tensor(output) -> torch.Tensor:
    """A hooked layer's output as one tensor (transformers layers return tuples or model
    outputs).

    Raises:
        ConfigError: the layer outputs something else.
    """
    if isinstance(output, tuple | list):
        output = output[0]
    if hasattr(output, "last_hidden_state"):
        output = output.last_hidden_state
    if not isinstance(output, torch.Tensor):
        raise ConfigError(
            f"A distilled layer must output a tensor, got {type(output).__name__}. Fix: name "
            "layers that output tensors in `feature_layers`."
        )
    return output


def named_layers(root: nn.Module) -> dict[str, nn.Module]:
    """``root``'s named submodules, less metrics (a LightningModule teacher holds them)."""
    from torchmetrics import Metric, MetricCollection

    skip = [n for n, m in root.named_modules() if n and isinstance(m, Metric | MetricCollection)]
    return {
        n: m
        for n, m in root.named_modules()
        if not any(n == s or n.startswith(s + ".") for s in skip)
    }


def find_layer(root: nn.Module, name: str, role: str) -> nn.Module:
    """The layer of ``root`` named ``name`` (``''``: ``root`` itself).

    Raises:
        ConfigError: there is none; the message lists the names there are.
    """
    modules = named_layers(root)
    if name not in modules:
        names = [n for n in modules if n]
        raise ConfigError(
            f"The {role} has no layer named {name!r}. Its layers are: {names} "
            f"(and '' for the whole {role}). Fix: use one of these names in `feature_layers`."
        )
    return modules[name]


def adapter_key(name: str) -> str:
    """The key of the adapter of student layer ``name`` in a ``ModuleDict`` (no dots)."""
    return re.sub(r"\W", "_", name) or "backbone"


class FeatureCapture:
    """Forward hooks on named student and teacher layers that record their outputs, only
    inside :meth:`recording` (evaluation and prediction run the same layers untouched)."""

    def __init__(self):
        self.active = False
        self.features: dict[str, dict[str, torch.Tensor]] = {role: {} for role in ROLES}
        self.handles: list = []

    def watch(self, module: nn.Module, role: str, name: str) -> None:
        """Record ``module``'s output as ``features[role][name]`` while recording."""

        def capture(_module, _inputs, output):
            if self.active:
                self.features[role][name] = feature_tensor(output)

        self.handles.append(module.register_forward_hook(capture))

    @contextmanager
    def recording(self, on: bool = True) -> Iterator[None]:
        """Record the watched layers' outputs inside the block when ``on``."""
        self.active = on
        try:
            yield
        finally:
            self.active = False

    def take(self) -> dict[str, dict[str, torch.Tensor]]:
        """The recorded features, forgotten here (each step records its own)."""
        features, self.features = self.features, {role: {} for role in ROLES}
        return features


class FeatureAdapter(nn.Module):
    """A learned projection of a student feature to the teacher feature's shape (FitNets'
    regressor): a 1x1 convolution for feature maps (then resized to the teacher's height and
    width), a linear layer for vectors and token sequences.

    Args:
        student_shape: the student feature's shape, batch first.
        teacher_shape: the teacher feature's shape, batch first.

    Raises:
        ConfigError: the shapes cannot be paired (other ranks, or token sequences of other
            lengths).
    """

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]):
        super().__init__()
        if len(student_shape) != len(teacher_shape):
            raise ConfigError(
                f"Cannot project a student feature of shape {student_shape} to the teacher's "
                f"{teacher_shape}: they have different ranks. Fix: pair layers of the same kind "
                "(feature maps with feature maps, vectors with vectors) in `feature_layers`."
            )
        if len(student_shape) == 3 and student_shape[1] != teacher_shape[1]:
            raise ConfigError(
                f"Token features of {student_shape[1]} and {teacher_shape[1]} positions do not "
                "line up (different tokenizers or lengths). Fix: distil pooled features instead, "
                "e.g. `feature_layers: {'': backbone}` (the student's and teacher's backbone outputs)."
            )
        self.size = tuple(teacher_shape[2:]) if len(teacher_shape) == 4 else None
        if len(student_shape) == 4:
            self.proj = nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1)
        else:
            self.proj = nn.Linear(student_shape[-1], teacher_shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x
