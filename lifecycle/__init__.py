"""lifecycle: a deep learning model's whole life on PyTorch Lightning.

Stages are LightningModules (:mod:`lifecycle.stages`), data comes from LightningDataModules
(:mod:`lifecycle.data`), models are a backbone plus a head (:mod:`lifecycle.models`), and
everything is wired by LightningCLI configs (``lifecycle fit --config recipes/...yaml``).
"""

__version__ = "0.1.0"
