"""lifecycle: a deep learning model's whole life on PyTorch Lightning.

Stages are LightningModules (:mod:`lifecycle.stages`), data comes from LightningDataModules
(:mod:`lifecycle.data`), models are a backbone plus a head (:mod:`lifecycle.models`), and
everything is wired by LightningCLI configs (``lifecycle fit --config recipes/...yaml``).
"""

import os

# Offline by design: albumentations would check PyPI for updates on import, and transformers
# would retry the Hugging Face hub for 48 s before failing on a model name.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
