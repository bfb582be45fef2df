"""The distillation losses: Hinton's soft-target loss and FitNets' feature-matching terms."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

FeatureLoss = Literal["mse", "cosine"]
FEATURE_LOSSES = ("mse", "cosine")


def soft_target_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton's loss: KL(teacher || student) between the distributions softened at
    ``temperature``, times ``temperature ** 2`` (so its gradients keep their size as T
    changes), averaged over the batch.

    Args:
        student_logits: ``(batch, classes)``.
        teacher_logits: ``(batch, classes)``.
        temperature: the softmax temperature ``T`` (> 0).

    Returns:
        The loss, a float32 scalar whatever the logits' precision.
    """
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student_logits.float() / t, dim=-1),
            F.log_softmax(teacher_logits.float() / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )


def feature_matching_loss(
    student: torch.Tensor, teacher: torch.Tensor, kind: FeatureLoss
) -> torch.Tensor:
    """How far a student feature is from the teacher's of the same shape: ``"mse"`` (the mean
    squared error over every element, FitNets') or ``"cosine"`` (1 - the cosine similarity of
    each sample's flattened features, averaged over the batch)."""
    if kind == "mse":
        return F.mse_loss(student, teacher)
    return 1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1).mean()
