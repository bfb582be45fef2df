"""Stage LightningModules: each a backbone + head trained for one job."""

from lifecycle.stages.classification import ClassificationModule
from lifecycle.stages.regression import RegressionModule
from lifecycle.stages.supervised import SupervisedModule

__all__ = ["ClassificationModule", "RegressionModule", "SupervisedModule"]
