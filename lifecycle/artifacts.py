"""The pretrained-backbone format: what a pretraining stage writes and a fine-tuning stage reads.

A folder holding::

    lifecycle_pretrained.json   the manifest (below)
    backbone.safetensors        the backbone's weights (safetensors: loading runs no code)
    transforms.json             images: the normalization and augmentation pipelines used
    tokenizer.json, ...         text: the tokenizer (``save_pretrained`` files)
    config.json, model.safetensors
                                text from transformers: the whole language model, so
                                ``AutoModelForMaskedLM.from_pretrained(folder)`` (or
                                ``AutoModelForCausalLM``) and ``AutoTokenizer`` load it as well

The manifest says which backbone class and arguments rebuild the network (``backbone``:
``class_path`` / ``init_args``, the same shape as a recipe), what kind of data it takes
(``kind``: ``image`` or ``text``), the normalization or tokenizer, and what produced it
(``produced_by``: the stage, its objective, epochs, steps and final metrics) and when.

Fine-tuning reads it with :func:`load_backbone`, from a recipe::

    backbone:
      class_path: lifecycle.artifacts.load_backbone
      init_args: {path: runs/fashion_mnist-pretrain_simclr/version_0/pretrained}

The backbone comes back as the very class that was pretrained (so checkpoints of the
fine-tuned model have the same keys as one trained from scratch), remembering where it came
from; the stages then use the pretrained normalization for images and check that text is
tokenized with the pretrained tokenizer.
"""

from __future__ import annotations

import importlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifecycle.compat import checkpoint_instantiator
from lifecycle.errors import ConfigError, MissingFileError, UnsafeLoadError
from lifecycle.interfaces import optional, require
from lifecycle.models.weights import PretrainedInfo, load_state
from lifecycle.packaged import resolve_model_folder

log = logging.getLogger(__name__)

MANIFEST = "lifecycle_pretrained.json"
WEIGHTS = "backbone.safetensors"
FORMAT = "lifecycle.pretrained"
VERSION = 1


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict on the CPU with every sharded (FSDP2 ``DTensor``) entry gathered
    whole, by torch's ``get_model_state_dict(full_state_dict=True)``. Under FSDP2 every process
    must call it: gathering is a collective (``cpu_offload`` stays off, which would leave the
    other ranks' dicts empty)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def rebuild_spec(backbone: nn.Module, config: Any = None) -> dict:
    """``{"class_path", "init_args"}`` that rebuild ``backbone`` on their own: ``config`` when
    given (a recipe's backbone entry) and it names the class itself; for a backbone a loader
    built (:func:`load_backbone`, :func:`load_weights`, whose entries name only the folder or
    file they read), the class and arguments of the pretrained folder's manifest, else the
    arguments the backbone recorded at construction."""
    if config is not None and not isinstance(config, nn.Module):
        config = _plain(config)
        if isinstance(config, dict) and "class_path" in config and not is_loader_spec(config):
            return {"class_path": config["class_path"], "init_args": config.get("init_args", {})}
    info = getattr(backbone, "pretrained", None)
    if isinstance(info, PretrainedInfo) and isinstance(info.manifest.get("backbone"), dict):
        return json.loads(json.dumps(info.manifest["backbone"]))
    recorded = getattr(backbone, "init_args", None)
    if isinstance(recorded, dict):
        cls = type(backbone)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": _plain(recorded)}
    inner = (config.get("init_args") or {}).get("backbone") if isinstance(config, dict) else None
    if isinstance(inner, dict) and "class_path" in inner:  # load_weights' own backbone entry
        return rebuild_spec(backbone, inner)
    raise ValueError(
        f"Cannot tell how to rebuild {type(backbone).__name__}: it was built in Python and does "
        "not record its arguments. Fix: build it from a recipe (class_path/init_args), derive it "
        "from lifecycle.models.Backbone, or give save_backbone a `backbone_config` dict."
    )


def is_loader_spec(config: Any) -> bool:
    """Whether ``config`` is a ``{"class_path", ...}`` entry naming a function (a loader such
    as :func:`load_backbone`) rather than a class."""
    if not isinstance(config, dict) or not isinstance(config.get("class_path"), str):
        return False
    if config["class_path"] in LOADERS:
        return True
    try:
        return not isinstance(resolve_import_path(config["class_path"]), type)
    except ImportError:
        return False


def standalone_hparams(hparams: Any, key: str, backbone: nn.Module) -> None:
    """Replace a loader's entry at ``hparams[key]`` by :func:`rebuild_spec` of the
    ``backbone`` it built, so a checkpoint reloads without the folder or file it was loaded
    from (its weights are in the checkpoint). A backbone that cannot tell how it was built
    keeps the loader's entry, with a warning."""
    spec = hparams.get(key) if hasattr(hparams, "get") else None
    if not is_loader_spec(_plain(spec)):
        return
    try:
        own = rebuild_spec(backbone)
        params = list(backbone.parameters())
        if params and not any(p.requires_grad for p in params):
            # a linear probe resumed from the checkpoint must stay a linear probe
            own = {"class_path": "lifecycle.artifacts.frozen", "init_args": {"backbone": own}}
        hparams[key] = own
    except ValueError as err:
        log.warning(f"Checkpoints will need what {key} was loaded from to reload: {err}")


def _plain(value: Any) -> Any:
    """jsonargparse Namespaces, tuples and paths as JSON-ready dicts, lists and strings."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    """Write ``manifest`` (with format, version and time filled in) as the folder's manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    full = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **manifest,
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(full, indent=2, default=str) + "\n")
    return path


KINDS = ("image", "text", "features")


def backbone_kind(backbone: nn.Module) -> str:
    """What a folder of ``backbone`` is for, as it declares it: its ``input_kind``
    (:class:`~lifecycle.models.Backbone` subclasses say ``"image"`` or ``"text"``), else
    ``"text"`` for a backbone whose ``input_keys`` start with ``input_ids`` and ``"image"``
    for any other (:class:`~lifecycle.interfaces.BackboneLike`)."""
    declared = getattr(backbone, "input_kind", None)
    if declared is not None:
        return declared
    keys = getattr(backbone, "input_keys", ("image",))
    keys = [keys] if isinstance(keys, str) else list(keys)
    return "text" if keys[:1] == ["input_ids"] else "image"


def save_backbone(
    folder: str | Path,
    backbone: nn.Module,
    state: dict[str, torch.Tensor] | None = None,
    backbone_config: Any = None,
    datamodule: Any = None,
    produced_by: dict | None = None,
    kind: str | None = None,
) -> Path:
    """Write ``backbone`` in the pretrained-backbone format.

    Args:
        folder: the output folder (created).
        backbone: the network to save.
        state: its full state dict (default ``backbone.state_dict()``; pass
            :func:`full_state_dict`'s under FSDP).
        backbone_config: how to rebuild it (a recipe's ``class_path``/``init_args`` entry);
            default: the arguments a :class:`~lifecycle.models.Backbone` recorded.
        datamodule: the DataModule it was trained on (:class:`~lifecycle.interfaces.SavedData`):
            for ``kind: image`` its normalization and pipelines (``state_dict()``, written as
            ``transforms.json``), for ``kind: text`` its tokenizer.
        produced_by: what produced it (stage, objective, epochs, metrics).
        kind: what the folder is for: ``"image"``, ``"text"`` or ``"features"``; decides what
            is saved of ``datamodule``. Default: what the backbone declares
            (:func:`backbone_kind`).

    Returns:
        The manifest's path.

    Raises:
        ConfigError: an unknown ``kind``, or a DataModule without what ``kind`` saves of it.
    """
    from safetensors.torch import save_file

    kind = kind or backbone_kind(backbone)
    if kind not in KINDS:
        raise ConfigError(f"save_backbone: `kind` must be one of {KINDS}, got {kind!r}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = rebuild_spec(backbone, backbone_config)
    state = state if state is not None else full_state_dict(backbone)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS))
    manifest: dict[str, Any] = {
        "kind": kind,
        "backbone": config,
        "out_features": getattr(backbone, "out_features", None),
        "weights": WEIGHTS,
    }
    if datamodule is not None and kind == "text":
        tokenizer = require(
            datamodule, "tokenizer", "save_backbone(kind='text')",
            "save a text backbone with the DataModule that tokenized its data",
        )  # fmt: skip
        tokenizer.save_pretrained(str(folder))
        manifest["tokenizer"] = "."
        manifest["max_length"] = optional(datamodule, "max_length")
    elif datamodule is not None and kind == "image":
        state_dict = require(
            datamodule, "state_dict", "save_backbone(kind='image')",
            "save an image backbone with a DataModule whose state_dict() gives its normalization",
        )  # fmt: skip
        transforms = state_dict()
        (folder / "transforms.json").write_text(json.dumps(transforms, indent=2) + "\n")
        manifest["transforms"] = "transforms.json"
        manifest["mean"], manifest["std"] = transforms.get("mean"), transforms.get("std")
        if optional(datamodule, "splits"):
            manifest["input_shape"] = list(datamodule.input_shape)
    if datamodule is not None:
        manifest["data"] = _plain(optional(datamodule, "hparams", {}))
    manifest["produced_by"] = produced_by or {}
    return write_manifest(folder, manifest)


def read_manifest(path: str | Path) -> tuple[Path, dict]:
    """The folder and manifest of a pretrained backbone, with errors that say what is wrong."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise MissingFileError(
            f"Pretrained backbone folder {folder.resolve()} does not exist. A pretraining run "
            "writes one to runs/<run>/version_N/pretrained."
        )
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        found = sorted(p.name for p in folder.iterdir())[:12]
        raise MissingFileError(
            f"{folder} is not a pretrained backbone: it has no {MANIFEST} (a lifecycle "
            f"pretraining run's folder) and no config.json (a transformers model) (it holds "
            f"{found}). Point `path` at the `pretrained` folder a pretraining run wrote, or at "
            "a transformers model folder."
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version", 0) > VERSION:
        raise ConfigError(
            f"{manifest_path} is format {manifest.get('format')!r} version "
            f"{manifest.get('version')}; this lifecycle reads {FORMAT!r} up to version {VERSION}."
        )
    for key in ("backbone", "weights"):
        if key not in manifest:
            raise ConfigError(f"{manifest_path} has no {key!r} entry.")
    return folder, manifest


# Functions a checkpoint's hyperparameters may name besides classes: each checks what it reads.
LOADERS = frozenset(
    {
        "lifecycle.artifacts.load_backbone",
        "lifecycle.artifacts.load_weights",
        "lifecycle.artifacts.frozen",
        "lifecycle.stages.distillation.load_teacher",
    }
)


def resolve_import_path(class_path: str) -> Any:
    """The object a dotted path names (``pkg.module.Class``, ``pkg.module.Outer.Inner``),
    found by importing the longest importable module prefix; nothing is called.

    Raises:
        ImportError: no prefix imports, or the attribute is not there.
    """
    parts = str(class_path).split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError as err:
            raise ImportError(f"{'.'.join(parts[:cut])} has no {'.'.join(parts[cut:])!r}") from err
        return obj
    raise ImportError(f"no module of {class_path!r} can be imported")


def _allowed_names(allowed: tuple[type, ...]) -> str:
    return " or ".join(f"{c.__module__}.{c.__qualname__}" for c in allowed)


def check_spec(
    config: Any,
    source: str,
    allowed: tuple[type, ...] = (nn.Module,),
    loaders: frozenset[str] = frozenset(),
    field: str = "backbone",
) -> None:
    """Refuse a ``{"class_path", "init_args"}`` spec (nested entries too, in any dict or list)
    that would build anything but a subclass of ``allowed`` (or call one of ``loaders``),
    before anything is called: a file from elsewhere may name ``os.system`` or
    ``subprocess.Popen`` as well as a network.

    Args:
        config: the spec (or any JSON-like value holding specs).
        source: the file it came from (named in messages).
        allowed: the base classes a ``class_path`` may name.
        loaders: dotted names of functions that may be named too.
        field: where ``config`` sits in the file (named in messages).

    Raises:
        UnsafeLoadError: a ``class_path`` names something else.
        ImportError: a ``class_path`` cannot be imported.
    """
    if isinstance(config, list | tuple):
        for i, item in enumerate(config):
            check_spec(item, source, allowed, loaders, f"{field}[{i}]")
        return
    if not isinstance(config, dict):
        return
    for key, value in config.items():
        if key not in ("class_path", "_class_path"):
            check_spec(value, source, allowed, loaders, f"{field}.{key}")
    key = "class_path" if "class_path" in config else "_class_path"  # Lightning's, top level
    class_path = config.get(key)
    if class_path is None:
        return
    if isinstance(class_path, str) and class_path in loaders:
        return
    try:
        obj = resolve_import_path(class_path) if isinstance(class_path, str) else class_path
    except ImportError as err:
        raise ImportError(
            f"{source}: {field}.{key} {class_path!r} cannot be imported ({err}). "
            "Fix: install the package that defines it."
        ) from err
    if not (isinstance(obj, type) and issubclass(obj, allowed)):
        kind = f"a {type(obj).__name__}" if not isinstance(obj, type) else "a class of another kind"
        raise UnsafeLoadError(
            f"{source}: {field}.{key} is {class_path!r} ({kind}); loading builds only "
            f"subclasses of {_allowed_names(allowed)}, so it was refused before anything ran. "
            "Fix: if you wrote this file, name the network's class there; if it came from "
            "elsewhere, do not load it."
        )


def check_checkpoint(path: str | Path, base: type | None = None) -> dict:
    """Read a Lightning checkpoint (``weights_only=True``) and refuse it, before anything is
    built, when its hyperparameters name anything but a ``base`` subclass (default
    ``LightningModule``) as the module, and anything but networks, optimizers, schedulers
    and :data:`LOADERS` inside it.

    Returns:
        The checkpoint.

    Raises:
        UnsafeLoadError: a class the checkpoint may not build, or an untrusted instantiator.
        MissingFileError: no file at ``path``.
    """
    import lightning as L

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"Checkpoint {path.resolve()} does not exist.")
    try:
        import zipfile

        # mmap: only the pickled structure is read now, not every tensor; a legacy (pre-zip)
        # file can be neither mapped nor scanned for globals, and torch's restricted unpickler
        # alone then decides what it may hold
        modern = zipfile.is_zipfile(path)
        with torch.serialization.safe_globals(checkpoint_globals(path) if modern else []):
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True, mmap=modern)
    except UnsafeLoadError:
        raise
    except Exception as err:  # pickle errors name no fix
        raise UnsafeLoadError(
            f"{path} cannot be read with weights_only=True ({type(err).__name__}: "
            f"{str(err)[:200]}): it holds objects other than tensors and plain values, and "
            "unpickling them could run code. Fix: load only checkpoints written by lifecycle."
        ) from err
    hparams = (checkpoint.get("hyper_parameters") or {}) if isinstance(checkpoint, dict) else {}
    instantiator = checkpoint_instantiator(hparams)
    if instantiator is not None and instantiator != "lightning.pytorch.cli.instantiate_module":
        raise UnsafeLoadError(
            f"{path}: hyper_parameters._instantiator is {instantiator!r}, not Lightning's "
            "lightning.pytorch.cli.instantiate_module; refused before anything ran."
        )
    if "_class_path" in hparams:
        check_spec(
            {"_class_path": hparams["_class_path"]},
            str(path),
            (base or L.LightningModule,),
            field="hyper_parameters",
        )
    check_spec(hparams, str(path), checkpoint_classes(), LOADERS, field="hyper_parameters")
    return checkpoint


def checkpoint_globals(path: str | Path) -> list[type]:
    """The classes a checkpoint pickles by reference beyond what ``weights_only=True`` reads
    (a module built in Python records e.g. ``optimizer=torch.optim.AdamW`` as the class), found
    without unpickling; to pass to ``torch.serialization.safe_globals``.

    Raises:
        UnsafeLoadError: one is not a network, optimizer or scheduler class (a function, a
            ``functools.partial``, ...).
    """
    from torch.serialization import get_unsafe_globals_in_checkpoint

    allowed, found, refused = checkpoint_classes(), [], []
    for name in sorted(set(get_unsafe_globals_in_checkpoint(str(path)))):
        try:
            obj = resolve_import_path(name)
        except ImportError:
            obj = None
        if isinstance(obj, type) and issubclass(obj, allowed):
            found.append(obj)
        else:
            refused.append(name)
    if refused:
        raise UnsafeLoadError(
            f"{path} pickles {refused}, which are not subclasses of "
            f"{_allowed_names(allowed)}: unpickling them could run code, so the "
            "file was refused before anything ran. Fix: build the module from a recipe or give "
            "classes (not functools.partial or functions) as its arguments; load the file with "
            "weights_only=False only if you wrote it yourself."
        )
    return found


def checkpoint_classes() -> tuple[type, ...]:
    """What a checkpoint's hyperparameters may build inside its module: networks, optimizers
    and learning-rate schedulers."""
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    return (nn.Module, Optimizer, LRScheduler, ReduceLROnPlateau)


# torch.compile's wrapper (torch._dynamo's OptimizedModule) keeps the module as `_orig_mod`
COMPILED_PREFIX = "_orig_mod."


def strip_compiled_prefix(state: dict) -> int:
    """Rename, in place, the keys a ``torch.compile`` wrapper gave a state dict
    (``backbone._orig_mod.conv.weight`` -> ``backbone.conv.weight``).

    Returns:
        How many keys were renamed.
    """
    renamed = [k for k in state if COMPILED_PREFIX in k]
    for key in renamed:
        state[key.replace(COMPILED_PREFIX, "")] = state.pop(key)
    if renamed:
        log.info(f"Renamed {len(renamed)} keys saved under torch.compile's {COMPILED_PREFIX!r}.")
    return len(renamed)


def instantiate(config: dict, source: str = "the spec") -> Any:
    """Build ``{"class_path", "init_args"}`` (nested entries too) by importing the class;
    :func:`check_spec` first refuses, before anything is called, any ``class_path`` that is
    not an ``nn.Module`` subclass.

    Raises:
        UnsafeLoadError: a ``class_path`` that is not an ``nn.Module`` subclass.
        ImportError: one that cannot be imported.
    """
    check_spec(config, source)
    return _build(config)


def _build(config: Any) -> Any:
    if isinstance(config, list):
        return [_build(c) for c in config]
    if not isinstance(config, dict) or "class_path" not in config:
        return config
    cls = resolve_import_path(config["class_path"])
    kwargs = {k: _build(v) for k, v in (config.get("init_args") or {}).items()}
    return cls(**kwargs)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``torch.save`` file loaded with
    ``weights_only=True`` (no code runs); a Lightning checkpoint's ``state_dict`` entry."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"Weights file {path.resolve()} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors name no fix
        raise ValueError(
            f"{path} is not a weights file torch can read safely ({type(err).__name__}: "
            f"{str(err)[:200]}). Fix: save a plain state_dict (torch.save(model.state_dict())) "
            "or a .safetensors file."
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path} does not hold a state_dict (a dict of tensors).")
    return state


def load_weights(
    backbone: nn.Module,
    path: str,
    key_map: dict[str, str] | None = None,
    strict: bool = True,
) -> nn.Module:
    """``backbone`` with the weights of a plain state_dict file, keys renamed by prefix.

    For weights saved by other code: a Lightning checkpoint of a whole model
    (``key_map: {"backbone.": ""}`` keeps the backbone's entries), a torchvision or timm
    file, ... From a recipe::

        backbone:
          class_path: lifecycle.artifacts.load_weights
          init_args:
            backbone: {class_path: lifecycle.models.SmallCNN, init_args: {...}}
            path: runs/my-run/version_0/checkpoints/last.ckpt
            key_map: {"backbone.": ""}

    Args:
        backbone: the network to fill.
        path: a ``.safetensors``, ``.pt``/``.pth`` or ``.ckpt`` file (read with
            ``weights_only=True``: loading runs no code).
        key_map: ``{saved prefix: model prefix}``: each saved key starting with a listed prefix
            has it replaced (the longest match wins); with a map, saved keys matching no
            prefix are left out (their number is logged).
        strict: missing or unexpected keys are an error that lists them; with ``False`` they
            are logged and the matching keys loaded. Mis-shaped keys are always an error.

    Returns:
        ``backbone``, with ``backbone.load_report``: the missing and unexpected keys.
    """
    state = read_state_dict(path)
    if key_map:
        renamed, unmatched = {}, []
        prefixes = sorted(key_map, key=len, reverse=True)
        for key, value in state.items():
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            if prefix is None:
                unmatched.append(key)
            else:
                renamed[key_map[prefix] + key[len(prefix) :]] = value
        if not renamed:
            raise ValueError(
                f"No key of {path} starts with a key_map prefix {prefixes} (its keys start "
                f"{sorted({k.split('.')[0] + '.' for k in state})[:10]})."
            )
        state = renamed
        if unmatched:
            log.info(f"{len(unmatched)} keys of {path} match no key_map prefix; left out.")
    backbone.load_report = load_state(backbone, state, str(path), strict=strict)
    return backbone


def load_backbone(path: str, freeze: bool = False) -> nn.Module:
    """The backbone saved in a pretrained-backbone folder, with its weights; or a pretrained
    ``transformers`` model's encoder.

    Args:
        path: a pretrained-backbone folder (``runs/<pretraining run>/version_N/pretrained``);
            a ``transformers`` model folder (``config.json`` and weights, no manifest), loaded
            as a :class:`~lifecycle.models.text.PretrainedTransformer` (mean-pooled, no remote
            code); or a packaged model's name (``all-MiniLM-L6-v2``).
        freeze: set ``requires_grad=False`` on every parameter (a fixed feature extractor;
            BatchNorm statistics still update in training mode: the
            :class:`~lifecycle.training.finetuning.LinearProbe` callback also keeps them fixed).

    Returns:
        An instance of the saved backbone class with the pretrained weights, and a
        ``pretrained`` attribute (:class:`PretrainedInfo`) telling stages its normalization or
        tokenizer.
    """
    from safetensors.torch import load_file

    folder = resolve_model_folder(path)
    if folder.is_dir() and not (folder / MANIFEST).is_file() and (folder / "config.json").is_file():
        from lifecycle.models.text import PretrainedTransformer

        backbone = PretrainedTransformer(str(path))
        return backbone.requires_grad_(False) if freeze else backbone
    folder, manifest = read_manifest(folder)
    backbone = instantiate(manifest["backbone"], f"{folder / MANIFEST}")
    weights = folder / manifest["weights"]
    if not weights.is_file():
        raise MissingFileError(
            f"{folder / MANIFEST} names weights {weights.name}, not in {folder}."
        )
    load_state(backbone, load_file(str(weights)), str(weights))
    if freeze:
        backbone.requires_grad_(False)
    tokenizer = folder / manifest["tokenizer"] if manifest.get("tokenizer") else None
    backbone.pretrained = PretrainedInfo(
        folder, manifest, manifest.get("mean"), manifest.get("std"), tokenizer
    )
    made = manifest.get("produced_by", {})
    log.info(
        f"Loaded {manifest['backbone']['class_path']} from {folder} "
        f"({made.get('objective', 'unknown objective')}, {made.get('epochs')} epochs)."
    )
    return backbone


def frozen(backbone: nn.Module) -> nn.Module:
    """``backbone`` with ``requires_grad=False`` on every parameter: how a checkpoint records a
    backbone :func:`load_backbone` loaded with ``freeze=True``.

    Args:
        backbone: the network (a ``class_path``/``init_args`` entry from a recipe).
    """
    return backbone.requires_grad_(False)


class SavesPretrained:
    """Mixin of the pretraining stages: at the end of ``fit``, ``save_pretrained`` writes the
    model to ``save_to``, or to ``<run folder>/pretrained`` (nothing without a logger, nor under
    ``fast_dev_run``), with the final logged metrics in the manifest. Every process calls it
    (FSDP gathers shards)."""

    save_to: str | None = None

    def save_pretrained(self, folder: str, metrics: dict | None = None) -> None:
        raise NotImplementedError

    def on_fit_end(self) -> None:
        trainer = self.trainer
        folder = self.save_to
        if trainer.fast_dev_run:  # a smoke test, like Lightning's own checkpointing
            log.info("fast_dev_run: no pretrained backbone written.")
            return
        if folder is None:
            if trainer.logger is None:
                return
            # a broadcast: every rank asks; a logger without a folder uses the root dir
            folder = f"{trainer.log_dir or trainer.default_root_dir}/pretrained"
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        self.save_pretrained(folder, metrics)
        if trainer.is_global_zero:
            log.warning(
                f"Pretrained backbone written to {folder} (read by lifecycle.artifacts.load_backbone)"
            )
