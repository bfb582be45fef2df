"""Stage LightningModules: each a backbone + head trained for one job, or a pretraining
objective whose backbone the next stage loads, or a student distilled from a teacher."""

from lifecycle.stages.classification import ClassificationModule
from lifecycle.stages.contrastive import ContrastivePretrainingModule
from lifecycle.stages.distillation import DistillationModule
from lifecycle.stages.language_model import CausalLMPretrainingModule, MaskedLMPretrainingModule
from lifecycle.stages.regression import RegressionModule
from lifecycle.stages.supervised import SupervisedModule

__all__ = [
    "CausalLMPretrainingModule",
    "ClassificationModule",
    "ContrastivePretrainingModule",
    "DistillationModule",
    "MaskedLMPretrainingModule",
    "RegressionModule",
    "SupervisedModule",
]
