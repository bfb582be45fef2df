"""Pretrained models that install offline from the package registries, by name: defined in
:mod:`lifecycle.packaged` (below both :mod:`lifecycle.data` and :mod:`lifecycle.models`, so
neither imports the other through it) and re-exported here, where the models read them."""

from lifecycle.packaged import PACKAGED, PackagedModel, resolve_model_folder

__all__ = ["PACKAGED", "PackagedModel", "resolve_model_folder"]
