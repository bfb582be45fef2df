"""A sweep file: what ``lifecycle tune sweep`` searches, and how.

.. code-block:: yaml

    trials: 24                 # finished trials the study ends with (pruned and failed count)
    metric: val/accuracy       # default: the recipe's model's `monitor`
    direction: maximize        # default: the model's `monitor_mode` (min -> minimize)
    sampler: tpe               # tpe (Optuna's default) | random
    seed: 0                    # the sampler's seed
    pruner: median             # median | successive_halving | hyperband | none
    params:
      model.init_args.optimizer:                       # a categorical class_path: the optimizer
        choices:
          sgd: {class_path: torch.optim.SGD}
          momentum: {class_path: torch.optim.SGD, init_args: {momentum: 0.9, nesterov: true}}
          adagrad: {class_path: torch.optim.Adagrad}
          rmsprop: {class_path: torch.optim.RMSprop}
          adam: {class_path: torch.optim.Adam}
      model.init_args.optimizer.init_args.lr: {low: 1.0e-4, high: 0.3, log: true}
      model.init_args.optimizer.init_args.weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}
      model.init_args.scheduler.init_args.max_lr: {same_as: model.init_args.optimizer.init_args.lr}
      data.init_args.batch_size: {choices: [64, 128, 256]}
      model.init_args.backbone.init_args.hidden: {type: int, low: 64, high: 512, step: 64}

Each key of ``params`` is a field of the recipe's config, as on the command line
(``--model.init_args.optimizer.init_args.lr``), and its value one of:

- a range: ``{low, high}`` with ``type: float`` (the default) or ``int``, ``log: true`` for a
  log scale, ``step`` for a grid (not with ``log``): Optuna's ``suggest_float`` /
  ``suggest_int``;
- ``{choices: [...]}`` or ``{choices: {name: value, ...}}``: ``suggest_categorical``; a value may be
  a whole class (``class_path`` and ``init_args``), so the optimizer's choice is one parameter;
  named choices show by name in the summary and plots;
- ``{same_as: FIELD}``: the value drawn for another parameter (OneCycleLR's ``max_lr`` that must
  follow the optimizer's ``lr``).

Fields are applied in the file's order, so a field inside a chosen class (``...optimizer.init_args.lr``)
comes after the class. :func:`load_sweep` checks the file's shape (every mistake named by its key,
with the allowed values); :func:`check_fields` checks each field against the recipe before any
trial runs.
"""

from __future__ import annotations

import difflib
import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from lifecycle.errors import ConfigError, MissingFileError
from lifecycle.pipeline.spec import command_line_argument

SAMPLERS = ("tpe", "random")
PrunerName = Literal["median", "successive_halving", "hyperband", "none"]
PRUNERS = get_args(PrunerName)
DIRECTIONS = ("maximize", "minimize")
TOP_LEVEL = ("trials", "metric", "direction", "sampler", "seed", "pruner", "params")
RANGE_KEYS = ("type", "low", "high", "log", "step")


@dataclass(frozen=True)
class Param:
    """One searched field.

    Attributes:
        field: the config field, dotted as on the command line.
        kind: ``float``, ``int``, ``categorical`` or ``same_as``.
        low, high, log, step: a range's bounds, scale and grid.
        choices: a categorical's values by name (a list's values are named by themselves).
        same_as: the field whose value this one copies.
    """

    field: str
    kind: Literal["float", "int", "categorical", "same_as"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: dict[str, Any] = field(default_factory=dict)
    same_as: str | None = None

    def suggest(self, trial, drawn: dict[str, Any]) -> Any:
        """The value for ``trial`` (an ``optuna.trial.Trial``); ``drawn`` holds the values
        already drawn in this trial, by field. A categorical is suggested by its choice's name
        (Optuna stores names, not classes) and returned as its value."""
        if self.kind == "same_as":
            return drawn[self.same_as]
        if self.kind == "categorical":
            return self.choices[trial.suggest_categorical(self.field, list(self.choices))]
        if self.kind == "int":
            return trial.suggest_int(
                self.field, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.field, self.low, self.high, step=self.step, log=self.log)

    def value_of(self, stored: Any) -> Any:
        """The config value of what Optuna stored for this field (a choice's name -> value)."""
        return self.choices[stored] if self.kind == "categorical" else stored

    def examples(self) -> list[Any]:
        """Values that together use every part of the range or every choice: what
        :func:`check_fields` gives the recipe's parser."""
        if self.kind == "categorical":
            return list(self.choices.values())
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        if self.kind == "float":
            return [float(self.low), float(self.high)]
        return []


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file (see the module docstring).

    Attributes:
        params: the searched fields, in the file's order.
        trials: the number of finished trials the study ends with.
        metric: the validation metric to optimize; ``None``: the model's ``monitor``.
        direction: ``maximize`` or ``minimize``; ``None``: from the model's ``monitor_mode``.
        sampler: ``tpe`` or ``random``.
        seed: the sampler's seed.
        pruner: ``median``, ``successive_halving``, ``hyperband`` or ``none`` (see
            :func:`lifecycle.tuning.pruning.build_pruner`).
        source: the file it came from.
    """

    params: tuple[Param, ...]
    trials: int = 20
    metric: str | None = None
    direction: Literal["maximize", "minimize"] | None = None
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    pruner: PrunerName = "median"
    source: str = "sweep.yaml"

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.field == name)

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """``--field=value`` arguments for a trial's values (by field, as config values), in
        the file's order."""
        return [
            command_line_argument(p.field, values[p.field])
            for p in self.params
            if p.field in values
        ]


def _number(source: str, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{source}: {where} must be a finite number, got {value!r}.")
    return value


def _parse_param(source: str, name: str, spec: Any) -> Param:
    where = f"params.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{source}: {where} must be a mapping: {{low: ..., high: ...}} (a range), "
            f"{{choices: [...]}} or {{same_as: FIELD}}; got {spec!r}."
        )
    if "same_as" in spec:
        extra = sorted(set(spec) - {"same_as"})
        if extra:
            raise ConfigError(f"{source}: {where}: `same_as` takes no other keys (got {extra}).")
        return Param(name, "same_as", same_as=str(spec["same_as"]))
    if "choices" in spec:
        extra = sorted(set(spec) - {"choices"})
        if extra:
            raise ConfigError(
                f"{source}: {where}: a categorical takes only `choices` (got also {extra})."
            )
        choices = spec["choices"]
        if isinstance(choices, list):
            named = {}
            for value in choices:
                if isinstance(value, dict | list):
                    raise ConfigError(
                        f"{source}: {where}.choices: a class or list among the choices needs a "
                        "name: write `choices: {name: value, ...}` (e.g. `adam: {class_path: "
                        "torch.optim.Adam}`)."
                    )
                named[str(value) if not isinstance(value, str) else value] = value
            choices = named
        if not isinstance(choices, dict) or not choices:
            raise ConfigError(
                f"{source}: {where}.choices must be a non-empty list or a mapping of names to "
                f"values, got {spec['choices']!r}."
            )
        for key, value in choices.items():
            if isinstance(value, dict) and "class_path" in value:
                _check_class_path(source, f"{where}.choices.{key}.class_path", value["class_path"])
        return Param(name, "categorical", choices={str(k): v for k, v in choices.items()})
    unknown = sorted(set(spec) - set(RANGE_KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: {where}: unknown key{'s' if len(unknown) > 1 else ''} {unknown}. A range "
            f"takes {', '.join(RANGE_KEYS)}; a categorical `choices`; a copy `same_as`."
        )
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{source}: {where}: a range needs both `low` and `high`.")
    kind = spec.get("type", "float")
    if kind not in ("float", "int"):
        raise ConfigError(f"{source}: {where}.type must be float or int, got {kind!r}.")
    low, high = (
        _number(source, f"{where}.low", spec["low"]),
        _number(source, f"{where}.high", spec["high"]),
    )
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(
            f"{source}: {where}: `type: int` needs whole `low` and `high`, got {low}, {high}."
        )
    if not low < high:
        raise ConfigError(f"{source}: {where}: `low` ({low}) must be below `high` ({high}).")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{source}: {where}.log must be true or false, got {log!r}.")
    if log and low <= 0:
        raise ConfigError(
            f"{source}: {where}: a log range needs `low` > 0, got {low}. Fix: a positive `low` "
            "(e.g. 1.0e-5) or `log: false`."
        )
    step = spec.get("step")
    if step is not None:
        step = _number(source, f"{where}.step", step)
        if step <= 0:
            raise ConfigError(f"{source}: {where}.step must be positive, got {step}.")
        if log:
            raise ConfigError(f"{source}: {where}: `step` and `log: true` cannot go together.")
        if kind == "int" and not float(step).is_integer():
            raise ConfigError(f"{source}: {where}.step must be whole for `type: int`, got {step}.")
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _check_class_path(source: str, where: str, class_path: Any) -> None:
    """Refuse a ``class_path`` that does not import, naming the module's classes that come
    closest."""
    module_name, _, name = str(class_path).rpartition(".")
    try:
        module = importlib.import_module(module_name) if module_name else None
    except ImportError:
        module = None
    if module is not None and isinstance(getattr(module, name, None), type):
        return
    if module is None:
        raise ConfigError(
            f"{source}: {where}: `{class_path}` cannot be imported (no module "
            f"`{module_name or class_path}`). Fix: a dotted path to a class, e.g. torch.optim.AdamW."
        )
    classes = sorted(
        k for k, v in vars(module).items() if isinstance(v, type) and not k.startswith("_")
    )
    close = difflib.get_close_matches(name, classes, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(f'{module_name}.{c}' for c in close)}?" if close else ""
    raise ConfigError(
        f"{source}: {where}: `{module_name}` has no class `{name}`.{hint} Its classes: "
        f"{', '.join(classes[:30])}{' ...' if len(classes) > 30 else ''}."
    )


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file.

    Raises:
        MissingFileError: no such file.
        ConfigError: a mistake in it (an unknown key, an invalid range, an unknown
            ``class_path``, a ``same_as`` of a field that is not searched), named by its key.
    """
    import yaml

    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise MissingFileError(f"--sweep {path}: no such file. Fix: give the sweep file (YAML).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    return parse_sweep(data, source)


def parse_sweep(data: Any, source: str = "sweep.yaml") -> Sweep:
    """A :class:`Sweep` from the sweep file's contents (see :func:`load_sweep`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a sweep file is a mapping with `params:`; got {data!r}.")
    unknown = [k for k in data if k not in TOP_LEVEL]
    if unknown:
        close = {k: difflib.get_close_matches(str(k), TOP_LEVEL, n=1) for k in unknown}
        hints = [f"`{k}` (did you mean `{c[0]}`?)" if c else f"`{k}`" for k, c in close.items()]
        raise ConfigError(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}. "
            f"Valid: {', '.join(TOP_LEVEL)}."
        )
    params = data.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError(
            f"{source}: `params` must map config fields to what to search, e.g. "
            "`model.init_args.optimizer.init_args.lr: {low: 1.0e-4, high: 0.1, log: true}`."
        )
    parsed = tuple(_parse_param(source, str(k), v) for k, v in params.items())
    seen: set[str] = set()
    for param in parsed:
        if param.kind == "same_as" and param.same_as not in seen:
            searched = [p.field for p in parsed if p.kind != "same_as"]
            raise ConfigError(
                f"{source}: params.{param.field}.same_as: `{param.same_as}` is not a field "
                f"searched before it. Searched: {', '.join(searched)}."
            )
        seen.add(param.field)
    trials = data.get("trials", 20)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"{source}: `trials` must be a positive integer, got {trials!r}.")
    choices = {"direction": DIRECTIONS, "sampler": SAMPLERS, "pruner": PRUNERS}
    for key, allowed in choices.items():
        value = data.get(key)
        if value is not None and value not in allowed:
            raise ConfigError(f"{source}: `{key}: {value}` is not one of {', '.join(allowed)}.")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{source}: `seed` must be an integer, got {seed!r}.")
    metric = data.get("metric")
    return Sweep(
        params=parsed,
        trials=trials,
        metric=str(metric) if metric is not None else None,
        direction=data.get("direction"),
        sampler=data.get("sampler") or "tpe",
        seed=seed,
        pruner=data.get("pruner") or "median",
        source=source,
    )


def field_hint(config: dict, dotted: str) -> str:
    """Where ``dotted`` leaves the resolved ``config`` (a nested dict), and the fields that are
    there instead: ``model.init_args.optimizer.init_args has no `lrr`; its fields: lr, betas,
    ...``; empty when every part of the path exists."""
    node: Any = config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return ""
        if part not in node:
            here = ".".join(parts[:i]) or "the config"
            fields = [str(k) for k in node]
            close = difflib.get_close_matches(part, fields, n=1)
            did = f" (did you mean `{close[0]}`?)" if close else ""
            return f"{here} has no `{part}`{did}; its fields: {', '.join(fields)}"
        node = node[part]
    return ""
