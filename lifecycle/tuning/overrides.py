"""Override files: a tuning result as a config that ``--config`` adds on top of a recipe
(``lifecycle fit --config RECIPE --config runs/.../best.yaml``), dotted fields written nested, as
jsonargparse merges them into the recipe's (a class's ``init_args`` without its ``class_path``
change that class's arguments only)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lifecycle.errors import ConfigError


def short_field(field: str) -> str:
    """A field as tables and plots show it: the last two parts, ``init_args`` left out
    (``model.init_args.optimizer.init_args.lr`` -> ``optimizer.lr``)."""
    parts = [p for p in field.split(".") if p != "init_args"]
    return ".".join(parts[-2:]) if len(parts) > 1 else field


def nested(values: dict[str, Any]) -> dict:
    """``{"model.init_args.lr": 0.1}`` -> ``{"model": {"init_args": {"lr": 0.1}}}``: dotted
    fields as a config file that ``--config`` adds on top of a recipe."""
    out: dict = {}
    for key, value in values.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"the field {key} lies inside a value that is not a mapping")
        leaf, value = parts[-1], copy.deepcopy(value)
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = {**value, **node[leaf]}  # a class chosen, then its own init_args
        else:
            node[leaf] = value
    return out


def write_override_file(path: Path, values: dict[str, Any], header: list[str]) -> Path:
    """Write ``values`` (dotted fields) as a config to add with ``--config``, headed by
    ``header`` as comments."""
    import yaml

    body = yaml.safe_dump(nested(values), sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"# {line}\n" if line else "#\n" for line in header) + body)
    return path
