"""lifecycle: a deep learning model's whole life on PyTorch Lightning.

Stages are LightningModules (:mod:`lifecycle.stages`), data comes from LightningDataModules
(:mod:`lifecycle.data`), models are a backbone plus a head (:mod:`lifecycle.models`), and
everything is wired by LightningCLI configs (``lifecycle fit --config recipes/...yaml``).

Importing it changes nothing in the process's environment; the ``lifecycle`` command's entry
point (:mod:`lifecycle.cli`) sets ``HF_HUB_OFFLINE`` and ``NO_ALBUMENTATIONS_UPDATE``.
"""

__version__ = "0.1.0"
