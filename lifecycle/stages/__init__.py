"""Stage LightningModules: each a backbone + head trained for one job, or a pretraining
objective whose backbone the next stage loads."""

from lifecycle.stages.classification import ClassificationModule
from lifecycle.stages.contrastive import ContrastivePretrainingModule
from lifecycle.stages.language_model import CausalLMPretrainingModule, MaskedLMPretrainingModule
from lifecycle.stages.regression import RegressionModule
from lifecycle.stages.supervised import SupervisedModule

__all__ = [
    "CausalLMPretrainingModule",
    "ClassificationModule",
    "ContrastivePretrainingModule",
    "MaskedLMPretrainingModule",
    "RegressionModule",
    "SupervisedModule",
]
