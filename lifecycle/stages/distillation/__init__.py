"""Teacher-student knowledge distillation (Hinton et al. 2015; FitNets).

A trained teacher's predictions teach a smaller student. The student is an ordinary
backbone + head, so the distilled model is a :class:`~lifecycle.stages.classification.ClassificationModule`
in all but its loss: the same metrics, reports, checkpoints (with the student's keys) and
strategies. A recipe::

    model:
      class_path: lifecycle.stages.distillation.DistillationModule
      init_args:
        teacher:
          class_path: lifecycle.stages.distillation.load_teacher
          init_args: {path: runs/fashion_mnist-classify/version_0/checkpoints/last.ckpt}
        student:
          class_path: lifecycle.models.MLP
          init_args: {in_features: 784, hidden: [128]}
        num_classes: 10
        temperature: 4.0
        alpha: 0.7

One module per concern:

- :mod:`~lifecycle.stages.distillation.teacher`: loading a trained teacher, frozen
  (:func:`load_teacher`, :class:`TransformersClassifier`), and what it was trained with
  (:func:`teacher_tokenizer`);
- :mod:`~lifecycle.stages.distillation.losses`: Hinton's soft-target loss and the feature terms;
- :mod:`~lifecycle.stages.distillation.features`: the hooks that record named layers' outputs
  and the adapters that project a student feature to the teacher's shape;
- :mod:`~lifecycle.stages.distillation.module`: the stage, :class:`DistillationModule`.
"""

from lifecycle.stages.distillation.features import FeatureAdapter, FeatureCapture
from lifecycle.stages.distillation.losses import feature_matching_loss, soft_target_loss
from lifecycle.stages.distillation.module import DistillationModule
from lifecycle.stages.distillation.teacher import (
    TransformersClassifier,
    load_teacher,
    parameter_count,
    teacher_tokenizer,
)

__all__ = [
    "DistillationModule",
    "FeatureAdapter",
    "FeatureCapture",
    "TransformersClassifier",
    "feature_matching_loss",
    "load_teacher",
    "parameter_count",
    "soft_target_loss",
    "teacher_tokenizer",
]
