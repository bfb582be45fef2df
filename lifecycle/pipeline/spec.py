"""A pipeline recipe: named stages, each an existing ``lifecycle`` subcommand with its own stage
recipe, overrides of its fields, and inputs taken from earlier stages' declared outputs::

    # lifecycle run --config recipes/fashion_mnist/lifecycle.yaml
    root: runs/fashion_mnist-lifecycle
    stages:
      clean:    {command: clean, config: recipes/fashion_mnist/clean.yaml}
      pretrain: {command: fit, config: recipes/fashion_mnist/pretrain_simclr.yaml,
                 inputs: {data.init_args.cleaned_manifest: clean.manifest}}
      finetune: {command: fit, config: recipes/fashion_mnist/finetune_simclr.yaml,
                 inputs: {model.init_args.backbone: pretrain.backbone}}

The file is parsed by jsonargparse against :class:`Pipeline` and :class:`Stage` (their typed
``__init__`` signatures are the schema), so a misspelt key gets the same kind of message as in
a stage recipe. Everything else is checked before anything runs
(:func:`check_graph`, :func:`input_argument`): an unknown stage or output name, a cycle, an input
whose kind does not fit the field it fills (a manifest given as a backbone), a missing recipe, a
field that the stage's recipe does not have; each error names the stage, the field and the valid
choices.

An input fills its field by what the field holds in the stage's resolved config:

- a loader (``lifecycle.artifacts.load_backbone``, ``lifecycle.stages.distillation.load_teacher``,
  ``lifecycle.artifacts.load_weights``): the path goes to the loader's ``path`` argument, and the
  loader says which kind it reads (:data:`LOADER_INPUTS`);
- a network built from a ``class_path`` (e.g. ``lifecycle.models.SmallCNN``): a ``backbone``
  output replaces it with :func:`~lifecycle.artifacts.load_backbone` of the folder;
- a path (a string or ``null``): the path itself; a field named ``ckpt_path`` takes only a
  checkpoint, one whose name holds ``manifest`` only a manifest.

The target ``config`` takes a config file (an output of kind ``config``, e.g. a ``tune`` stage's
``best``): it is added after the stage's own recipes and overrides, as ``--config FILE``, so its
values win.

What a stage writes, by name, is what the classes of its config declare as ``outputs``
(:class:`~lifecycle.interfaces.StageOutput`, e.g. ``ClassificationModule.outputs``,
``DataCleaner.outputs``), kept to those the stage's command writes (``written_by``): a new kind
of stage becomes a pipeline stage by declaring its outputs, with no change here.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from lifecycle.errors import ConfigError, MissingFileError
from lifecycle.interfaces import StageOutput, outputs_of

# the loaders a recipe names in a network's place, by the kind of input they read and the
# argument that takes its path
LOADER_INPUTS: dict[str, tuple[str, str]] = {
    "lifecycle.artifacts.load_backbone": ("backbone", "path"),
    "lifecycle.stages.distillation.load_teacher": ("checkpoint", "path"),
    "lifecycle.artifacts.load_weights": ("checkpoint", "path"),
}
# outputs every run of the `lifecycle` command writes, whatever its subcommand
ALWAYS_WRITTEN = ("config", "log")
# the class a subcommand uses when its section is left out of the recipe
IMPLICIT_SECTIONS = {"clean": ("cleaning", "lifecycle.data.cleaning.DataCleaner")}


@dataclass
class Stage:
    """One stage of a pipeline: a ``lifecycle`` subcommand run on a stage recipe.

    Args:
        command: the subcommand: ``fit``, ``validate``, ``test``, ``predict`` or ``clean``
            (and every later one that declares its outputs).
        config: the stage recipe, or a list of them merged in order (e.g. the recipe and
            ``recipes/strategies/ddp.yaml``); paths relative to the current folder.
        inputs: ``{field: "<stage>.<output>"}``: the field of this stage's config that an
            earlier stage's output fills, e.g. ``{model.init_args.backbone: pretrain.backbone}``.
        overrides: ``{field: value}`` given to the command as ``--field value``, e.g.
            ``{trainer.max_epochs: 3}`` (a list or a mapping is given as JSON).
        launch: ``inprocess`` runs the command inside ``lifecycle run``; ``subprocess`` as its
            own ``python -m lifecycle`` process; ``auto``: a subprocess when the stage trains on
            several processes (``trainer.devices`` or ``trainer.num_nodes`` above 1), so that
            Lightning starts them as it does for a command typed by hand.
    """

    command: str
    config: str | list[str]
    inputs: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    launch: Literal["auto", "inprocess", "subprocess"] = "auto"

    @property
    def configs(self) -> list[str]:
        """The stage recipes, as a list."""
        return [self.config] if isinstance(self.config, str) else list(self.config)


@dataclass
class Pipeline:
    """A pipeline recipe (see the module docstring).

    Args:
        stages: the stages by name; they run in an order where every stage comes after the
            stages its inputs come from (the recipe's order among the others).
        root: the pipeline folder: each stage writes ``<root>/<stage>/version_N`` (default:
            ``runs/<recipe folder>-<recipe file>``).
        tracking: ``mlflow`` records the pipeline as an MLflow parent run with a nested run
            per stage and registers the final model (the ``tracking`` extra).
        tracking_uri: the MLflow tracking server (default: the ``MLFLOW_TRACKING_URI``
            environment variable, else a SQLite database in the pipeline folder).
        registered_model: the name the final model is registered under (default: the
            pipeline's name).
        presets: config files every stage adds after its own recipes, e.g.
            ``[recipes/strategies/ddp.yaml]`` for a pipeline that torchrun or SLURM starts on
            every rank.
        overrides: ``{field: value}`` for every stage, before the stage's own, e.g.
            ``{trainer.num_nodes: 2, trainer.devices: 8}``.
    """

    stages: dict[str, Stage]
    root: str | None = None
    presets: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    tracking: Literal["none", "mlflow"] = "none"
    tracking_uri: str | None = None
    registered_model: str | None = None


@dataclass(frozen=True)
class InputRef:
    """``<stage>.<output>``: an input of a stage, as a pipeline recipe names it."""

    stage: str
    output: str

    def __str__(self) -> str:
        return f"{self.stage}.{self.output}"


def _near(word: str, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return f"{hint} Valid: {', '.join(choices) or 'none'}."


def pipeline_parser():
    """The jsonargparse parser of a pipeline recipe: ``--config`` and :class:`Pipeline`'s
    fields."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="lifecycle run", exit_on_error=False)
    parser.add_argument("--config", action="config", help="The pipeline recipe (YAML).")
    parser.add_class_arguments(Pipeline, as_group=False)
    return parser


def _check_raw(path: Path, raw: Any) -> None:
    """Name the stage and the valid keys of a misspelt stage key, before jsonargparse (whose
    message names neither)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), dict) or not raw["stages"]:
        raise ConfigError(
            f"{path}: a pipeline recipe needs `stages:`, a mapping of stage names to "
            "{command, config, inputs, overrides}. Fix: see recipes/fashion_mnist/lifecycle.yaml."
        )
    keys = {f.name for f in fields(Pipeline)}
    for key in raw:
        if key not in keys:
            raise ConfigError(f"{path}: unknown key `{key}`.{_near(key, keys)}")
    allowed = {f.name for f in fields(Stage)}
    for name, stage in raw["stages"].items():
        if not isinstance(stage, dict):
            raise ConfigError(
                f"{path}: stage `{name}` must be a mapping with `command` and `config`, "
                f"not {stage!r}."
            )
        for key in stage:
            if key not in allowed:
                raise ConfigError(
                    f"{path}: stage `{name}`: unknown key `{key}`.{_near(key, allowed)}"
                )
        for key in ("command", "config"):
            if key not in stage:
                raise ConfigError(f"{path}: stage `{name}` has no `{key}`. Fix: add `{key}: ...`.")
        for where in ("inputs", "overrides"):
            if stage.get(where) is not None and not isinstance(stage[where], dict):
                raise ConfigError(
                    f"{path}: stage `{name}`: `{where}` must be a mapping of fields, e.g. "
                    "{model.init_args.backbone: pretrain.backbone}."
                )


def load_pipeline(path: str | Path, args: Iterable[str] = ()) -> Pipeline:
    """Parse and check a pipeline recipe (and command-line overrides of its fields, e.g.
    ``--root runs/x``), before anything runs.

    Raises:
        MissingFileError: no recipe at ``path``, or a stage recipe that does not exist.
        ConfigError: a misspelt key, an unknown command, an input that does not name
            ``<stage>.<output>`` of another stage, or a cycle.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"No pipeline recipe at {path.resolve()}. Fix: give one, e.g. "
            "--config recipes/fashion_mnist/lifecycle.yaml."
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    _check_raw(path, raw)
    parser = pipeline_parser()
    try:
        parsed = parser.parse_args(["--config", str(path), *args]).as_dict()
    except Exception as error:  # noqa: BLE001 - jsonargparse's message is the user's fix
        raise ConfigError(f"{path}: {error}") from None
    # checked, not instantiated: an override's `class_path` stays a mapping for its stage's
    # own parser (jsonargparse would build it here, as an `Any` value)
    pipeline = Pipeline(**{f.name: parsed.get(f.name) for f in fields(Pipeline)})
    stages = {}
    for name, given in pipeline.stages.items():
        stage = Stage(**{k: v for k, v in given.items() if not k.startswith("__")})
        stage.config = [*stage.configs, *(pipeline.presets or [])]
        stage.overrides = {**(pipeline.overrides or {}), **(stage.overrides or {})}
        stage.inputs = dict(stage.inputs or {})
        stages[name] = stage
    pipeline.stages = stages
    return pipeline


def check_graph(pipeline: Pipeline, commands: Iterable[str], source: str) -> list[str]:
    """Check each stage's command, recipes and input names, and return the stages in the
    order they run (every stage after those its inputs come from).

    Raises:
        ConfigError: an unknown command, an input not of the form ``<stage>.<output>`` or naming
            an unknown stage or itself, or a cycle (its stages named).
        MissingFileError: a stage recipe that does not exist.
    """
    commands = sorted(commands)
    for name, stage in pipeline.stages.items():
        if stage.command not in commands:
            raise ConfigError(
                f"{source}: stage `{name}`: unknown command `{stage.command}`."
                f"{_near(stage.command, commands)}"
            )
        for recipe in stage.configs:
            if not Path(recipe).is_file():
                raise MissingFileError(
                    f"{source}: stage `{name}`: no recipe at {Path(recipe).resolve()}. Fix: "
                    "correct `config` (paths are relative to the folder `lifecycle run` runs in, "
                    "e.g. recipes/fashion_mnist/classify.yaml)."
                )
        for target, ref in stage.inputs.items():
            upstream = parse_ref(ref, name, target, source)
            if upstream.stage == name:
                raise ConfigError(
                    f"{source}: stage `{name}`, input `{target}: {ref}` names the stage itself. "
                    "Fix: an input comes from an earlier stage."
                )
            if upstream.stage not in pipeline.stages:
                raise ConfigError(
                    f"{source}: stage `{name}`, input `{target}: {ref}`: there is no stage "
                    f"`{upstream.stage}`.{_near(upstream.stage, set(pipeline.stages) - {name})}"
                )
    return _order(pipeline, source)


def parse_ref(ref: Any, stage: str, target: str, source: str) -> InputRef:
    """``"pretrain.backbone"`` as an :class:`InputRef`."""
    if not isinstance(ref, str) or ref.count(".") < 1 or not all(ref.split(".", 1)):
        raise ConfigError(
            f"{source}: stage `{stage}`, input `{target}: {ref!r}` must name "
            "`<stage>.<output>`, e.g. pretrain.backbone or clean.manifest."
        )
    upstream, output = ref.split(".", 1)
    return InputRef(upstream, output)


def upstream_stages(stage: Stage) -> list[str]:
    """The stages ``stage`` takes inputs from, in the order of its inputs."""
    found = []
    for ref in stage.inputs.values():
        upstream = ref.split(".", 1)[0]
        if upstream not in found:
            found.append(upstream)
    return found


def _order(pipeline: Pipeline, source: str) -> list[str]:
    """Kahn's topological order, keeping the recipe's order among stages that are free."""
    names = list(pipeline.stages)
    needs = {name: set(upstream_stages(pipeline.stages[name])) for name in names}
    order: list[str] = []
    while len(order) < len(names):
        free = [n for n in names if n not in order and needs[n] <= set(order)]
        if not free:
            left = [n for n in names if n not in order]
            cycle = _find_cycle({n: needs[n] & set(left) for n in left})
            raise ConfigError(
                f"{source}: the stages' inputs form a cycle: {' -> '.join(cycle)}. Fix: an input "
                "must come from a stage that does not itself need this one's outputs."
            )
        order.append(free[0])
    return order


def _find_cycle(needs: dict[str, set[str]]) -> list[str]:
    start = next(iter(needs))
    path, node = [start], start
    while True:
        node = sorted(needs[node])[0]
        if node in path:
            return [*path[path.index(node) :], node]
        path.append(node)


def descendants(pipeline: Pipeline, names: Iterable[str]) -> set[str]:
    """``names`` and every stage that takes an input, directly or not, from one of them."""
    found = set(names)
    changed = True
    while changed:
        changed = False
        for name, stage in pipeline.stages.items():
            if name not in found and set(upstream_stages(stage)) & found:
                found.add(name)
                changed = True
    return found


def ancestors(pipeline: Pipeline, name: str) -> set[str]:
    """``name`` and every stage whose outputs it needs, directly or not."""
    found, todo = {name}, [name]
    while todo:
        for upstream in upstream_stages(pipeline.stages[todo.pop()]):
            if upstream not in found:
                found.add(upstream)
                todo.append(upstream)
    return found


def command_line_argument(key: str, value: Any) -> str:
    """``--key=value`` as the stage's command line takes a config value (JSON for a mapping
    or a list, ``true``/``false``, ``null``)."""
    import json

    if isinstance(value, dict | list):
        text = json.dumps(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    else:
        text = str(value)
    return f"--{key}={text}"


# ---------------------------------------------------------------------------- a stage's outputs
def _import(class_path: str) -> Any:
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def declared_outputs(command: str, config: dict) -> dict[str, StageOutput]:
    """The outputs a stage with this ``command`` and resolved ``config`` writes: those the
    classes of its top-level sections (``model``, ``data``, ``cleaning``, ...) declare, kept to
    what ``command`` writes (``fit`` with ``test_after_fit`` also the ``test`` ones)."""
    classes = []
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(value.get("class_path"), str):
            classes.append(_import(value["class_path"]))
        elif value is None and IMPLICIT_SECTIONS.get(command, ("",))[0] == key:
            classes.append(_import(IMPLICIT_SECTIONS[command][1]))
    if command in IMPLICIT_SECTIONS and IMPLICIT_SECTIONS[command][0] not in config:
        classes.append(_import(IMPLICIT_SECTIONS[command][1]))
    written = {command} | ({"test"} if command == "fit" and config.get("test_after_fit") else set())
    found: dict[str, StageOutput] = {}
    for cls in classes:
        for name, output in outputs_of(cls).items():
            if output.written_by in written or name in ALWAYS_WRITTEN:
                found.setdefault(name, output)
    return found


# ------------------------------------------------------------------------------- input -> field
def lookup(config: dict, dotted: str) -> tuple[bool, Any]:
    """``(found, value)`` of a dotted field in a nested config."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _fields(config: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        out.append(dotted)
        if isinstance(value, dict):
            out.extend(_fields(value, f"{dotted}."))
    return out


def field_kind(target: str, value: Any) -> tuple[str | None, str]:
    """``(kind, how)``: the kind of input a field takes (``None``: any file) and the argument a
    path goes to, from what the field holds in the resolved config."""
    last = target.rsplit(".", 1)[-1]
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        loader = LOADER_INPUTS.get(value["class_path"])
        if loader is not None:
            return loader[0], f"{target}.init_args.{loader[1]}"
        return "backbone", target
    if last == "ckpt_path" or "checkpoint" in last:
        return "checkpoint", target
    if "manifest" in last:
        return "manifest", target
    if value is None or isinstance(value, str):
        return None, target
    return "none", target


def input_argument(
    stage: str, target: str, ref: InputRef, output: StageOutput, config: dict, path: str
) -> tuple[str, Any]:
    """``(field, value)``: the command-line field an input's ``path`` is given as, checked
    against what the field holds in the stage's resolved ``config`` (module docstring).

    Raises:
        ConfigError: the field is not in the stage's config (the near ones named), or takes
            another kind of input than ``output`` is.
    """
    if target == "config":  # a config file to add after the stage's own (e.g. tune.best)
        if output.kind == "config":
            return "config", path
        raise ConfigError(
            f"stage `{stage}`, input `config: {ref}`: `config` takes a config file to add (an "
            f"output of kind config, e.g. tune.best); `{ref}` is a {output.kind} "
            f"({output.path}). Fix: give a config output, or name the field it belongs in."
        )
    found, value = lookup(config, target)
    if not found:
        near = difflib.get_close_matches(target, _fields(config), n=3, cutoff=0.6)
        hint = f" Fields near it: {', '.join(near)}." if near else ""
        raise ConfigError(
            f"stage `{stage}`, input `{target}: {ref}`: the stage's config has no field "
            f"`{target}`.{hint} Fix: name a field of the stage recipe (`lifecycle "
            "<command> --config <recipe> --print_config` lists them)."
        )
    kind, argument = field_kind(target, value)
    if kind == "backbone" and argument == target and output.kind == "backbone":
        return target, {
            "class_path": "lifecycle.artifacts.load_backbone",
            "init_args": {"path": path},
        }
    if kind is None and output.kind in ("checkpoint", "manifest", "backbone", "file"):
        return argument, path
    if kind == output.kind:
        return argument, path
    holds = f"holds {value['class_path']}" if isinstance(value, dict) else f"holds {value!r}"
    takes = {
        "backbone": "a pretrained backbone folder (e.g. pretrain.backbone)",
        "checkpoint": "a checkpoint (e.g. finetune.best_checkpoint)",
        "manifest": "a cleaned manifest (e.g. clean.manifest)",
        "none": "no path",
    }[kind or "none"]
    raise ConfigError(
        f"stage `{stage}`, input `{target}: {ref}`: `{ref}` is a {output.kind} "
        f"({output.path}: {output.description}), but `{target}` ({holds}) takes {takes}. Fix: "
        "give an output of that kind, or name the field it belongs in."
    )


def check_input_names(
    stage: str, target: str, ref: InputRef, outputs: dict[str, StageOutput], command: str
) -> StageOutput:
    """The output ``ref`` names among what its stage writes.

    Raises:
        ConfigError: the stage writes no output of that name (those it writes are named).
    """
    if ref.output not in outputs:
        raise ConfigError(
            f"stage `{stage}`, input `{target}: {ref}`: stage `{ref.stage}` (`{command}`) "
            f"writes no output `{ref.output}`.{_near(ref.output, outputs)}"
        )
    return outputs[ref.output]
