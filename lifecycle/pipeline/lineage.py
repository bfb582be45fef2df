"""The lineage record of a stage: what made a run folder, and from what.

Every run of the ``lifecycle`` command keeps one record, ``lineage.json`` in its run folder
(``<root>/<stage>/version_N/``), and embeds the same JSON in every checkpoint it saves as
``checkpoint["lifecycle_lineage"]``, so a model file says where it came from wherever it is
copied. The record holds:

- ``stage``, ``command`` (``fit``, ``test``, ``clean``, ...), ``status`` (``running``,
  ``finished``, ``failed``), ``folder``, ``started``/``ended``/``seconds``;
- ``config``: the resolved config, flattened to dotted keys (:func:`flatten`), and its
  ``config_hash`` (:func:`config_hash`);
- ``code``: the package version, the git commit and whether the package's files differ from
  it (with a hash of the difference), and ``source_hash`` over the installed package's Python
  files (:func:`code_version`), which is what the pipeline cache compares;
- ``versions``: Python and the libraries that decide the numbers (:func:`library_versions`);
- ``inputs``: per config field the upstream stage's output it was given (``from``:
  ``<stage>.<output>``), its path, its content hash (:func:`content_hash`) and the upstream run
  folder; ``outputs``: what the stage wrote, with hashes;
- ``metrics``: headline metrics (:func:`headline_metrics`); ``model``: the module's class and
  parameter counts; ``error`` when it failed.

A pipeline stage's record is written by the runner (``lifecycle run``, which adds
``pipeline`` and the cache ``fingerprint``); a run made by hand gets a standalone one from
:class:`LineageCallback`, the default callback of every ``lifecycle`` run. ``lifecycle lineage
TARGET`` (:func:`lineage_command`) prints the chain of records from the raw data to the final
model and draws it (:func:`lineage_tree`, :func:`draw_lineage`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

from lifecycle.errors import MissingFileError

FORMAT = "lifecycle.lineage"
VERSION = 1
LINEAGE_FILE = "lineage.json"
CHECKPOINT_KEY = "lifecycle_lineage"
CHUNK = 1 << 20
# the libraries whose versions a record keeps (those missing from the environment are left out)
LIBRARIES = (
    "torch",
    "lightning",
    "transformers",
    "torchmetrics",
    "jsonargparse",
    "tokenizers",
    "albumentations",
    "numpy",
)
# config fields that name a stage's raw data, in the order they are looked for
DATA_FIELDS = (
    "data.init_args.dataset",
    "data.init_args.data_dir",
    "data.init_args.root",
    "data.init_args.path",
    "data.init_args.csv",
)
TARGET_HELP = (
    "Fix: give a pipeline folder (the `root` of a `lifecycle run` recipe, e.g. "
    "runs/fashion_mnist-lifecycle), a stage's run folder (<root>/<stage>/version_N) or a "
    "checkpoint (.ckpt) saved by a lifecycle run."
)


# ----------------------------------------------------------------------------- hashes
def content_hash(path: str | os.PathLike) -> str:
    """The content hash of a file or a folder, as ``"sha256:<hex>"``.

    A file: sha256 of its bytes (read in 1 MiB chunks). A folder: sha256 over, for every file
    in it (recursively, sorted by relative POSIX path), the relative path and the file's own
    hash; so renaming, adding or removing a file changes it, and where the folder lies does not.

    Raises:
        MissingFileError: nothing at ``path``.
    """
    path = Path(path)
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"
    if path.is_dir():
        digest = hashlib.sha256()
        files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
        for relative, file in files:
            digest.update(relative.encode() + b"\0" + content_hash(file).encode() + b"\n")
        return f"sha256:{digest.hexdigest()}"
    raise MissingFileError(
        f"{path} does not exist, so it has no content hash. Fix: give the path of a file or "
        "folder that a stage wrote (its run folder lists them in lineage.json's `outputs`)."
    )


def short_hash(value: str | None, length: int = 12) -> str:
    """``"sha256:1a2b3c4d5e6f"``: a content or config hash cut to ``length`` hex digits."""
    if not value:
        return "no hash"
    algorithm, _, digest = str(value).partition(":")
    return f"{algorithm}:{digest[:length]}" if digest else str(value)[:length]


def config_hash(flat_config: dict) -> str:
    """``"sha256:<hex>"`` of a flattened config (JSON with sorted keys; other values by
    ``str``)."""
    text = json.dumps(flat_config, sort_keys=True, default=str)
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def source_hash(root: str | os.PathLike | None = None) -> str:
    """sha256 over every ``*.py`` file of a package tree (sorted relative POSIX paths, each with
    its bytes), as ``"sha256:<hex>"``.

    Args:
        root: the package folder; default: the installed ``lifecycle`` package.
    """
    root = Path(root) if root is not None else _package_folder()
    digest = hashlib.sha256()
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*.py") if p.is_file())
    for relative, file in files:
        data = file.read_bytes()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return f"sha256:{digest.hexdigest()}"


def _package_folder() -> Path:
    import lifecycle

    return Path(lifecycle.__file__).resolve().parent


# ----------------------------------------------------------------------------- versions
def code_version() -> dict[str, Any]:
    """Which code a run used, computed once per process.

    Returns:
        ``package_version`` (the installed distribution's, else ``lifecycle.__version__``);
        ``git_commit``, ``git_dirty`` and ``uncommitted_hash`` (sha256 of ``git diff HEAD`` of
        the package plus its untracked ``.py`` files; ``None`` when nothing differs) when the
        folder holding the package is in a git work tree, else ``None`` each; ``source_hash``
        (:func:`source_hash`), what the pipeline cache compares.
    """
    return copy.deepcopy(_code_version())


@functools.lru_cache(maxsize=1)
def _code_version() -> dict[str, Any]:
    package = _package_folder()
    try:
        version = importlib.metadata.version("lifecycle")
    except importlib.metadata.PackageNotFoundError:
        import lifecycle

        version = getattr(lifecycle, "__version__", None)
    return {"package_version": version, **git_state(package), "source_hash": source_hash(package)}


def git_state(package: str | os.PathLike) -> dict[str, Any]:
    """``git_commit``, ``git_dirty`` and ``uncommitted_hash`` of a package folder (see
    :func:`code_version`); ``None`` each when git is missing or the folder is not in a work
    tree. Never raises."""
    package = Path(package)
    none = {"git_commit": None, "git_dirty": None, "uncommitted_hash": None}
    where, name = package.parent, package.name
    if _git(where, "rev-parse", "--is-inside-work-tree") != b"true\n":
        return none
    commit = _git(where, "rev-parse", "HEAD")
    status = _git(where, "status", "--porcelain", "--", name)
    if commit is None or status is None:
        return none
    dirty = bool(status.strip())
    uncommitted = None
    if dirty:
        digest = hashlib.sha256(_git(where, "diff", "HEAD", "--", name) or b"")
        untracked = _git(where, "ls-files", "--others", "--exclude-standard", "--", name) or b""
        for relative in sorted(untracked.decode(errors="replace").splitlines()):
            file = where / relative
            if relative.endswith(".py") and file.is_file():
                digest.update(f"\0{relative}\0".encode() + file.read_bytes())
        uncommitted = f"sha256:{digest.hexdigest()}"
    return {
        "git_commit": commit.decode().strip(),
        "git_dirty": dirty,
        "uncommitted_hash": uncommitted,
    }


def _git(where: Path, *args: str) -> bytes | None:
    # GIT_OPTIONAL_LOCKS=0: `git status` only reads (it would otherwise refresh the index)
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(
            ["git", *args], cwd=where, capture_output=True, timeout=20, env=env, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def library_versions() -> dict[str, str]:
    """``python`` and the installed versions of :data:`LIBRARIES` (those not installed are left
    out)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


# ----------------------------------------------------------------------------- configs
def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys: ``{"model": {"init_args": {"lr": 1}}}`` becomes
    ``{"model.init_args.lr": 1}``. Lists (and everything else) stay values; an empty dict stays
    a value too, so the key is kept."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def diff(old: dict, new: dict) -> list[str]:
    """The changes from one flattened config to another, one readable line each, sorted by key:
    ``"model.init_args.temperature 4.0 -> 2.0"``, ``"trainer.max_epochs added (3)"``,
    ``"x removed (was 1)"``."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            lines.append(f"{key} added ({_show(new[key])})")
        elif key not in new:
            lines.append(f"{key} removed (was {_show(old[key])})")
        elif _plain(old[key]) != _plain(new[key]):
            lines.append(f"{key} {_show(old[key])} -> {_show(new[key])}")
    return lines


def _show(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def _plain(value: Any) -> Any:
    """``value`` as JSON would read it back (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def now() -> str:
    """The current time in UTC, ISO 8601 to the second (``2026-12-02T17:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")  # noqa: UP017 (py3.10)


def new_record(
    stage: str, command: str, folder: str | os.PathLike, config: dict | None = None, **fields: Any
) -> dict[str, Any]:
    """A record of a stage starting now: ``format``/``version``, ``stage``, ``command``,
    ``status`` ``"running"``, ``folder``, ``config`` (flattened, with its ``config_hash``) when
    given, ``code``, ``versions``, ``started``, then ``fields``."""
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "stage": stage,
        "command": command,
        "status": "running",
        "folder": str(folder),
    }
    if config is not None:
        flat = flatten(_plain(config))
        record.update(config=flat, config_hash=config_hash(flat))
    record.update(code=code_version(), versions=library_versions(), started=now())
    record.update(fields)
    return record


# ----------------------------------------------------------------------------- files
def write_record(folder: str | os.PathLike, record: dict) -> Path:
    """Write ``record`` as ``<folder>/lineage.json`` (indented JSON), atomically: into a
    temporary file in the folder first, then renamed over the old one, so a reader never sees
    half a record. Creates the folder.

    Returns:
        The path of ``lineage.json``.
    """
    return write_json(Path(folder) / LINEAGE_FILE, record)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path``, atomically (a temporary file in the same
    folder, synced, then renamed over it): a reader never sees half a file. Creates the folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, default=str) + "\n"
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The lineage record of a run folder (its ``lineage.json``), of a ``lineage.json`` file, or
    embedded in a checkpoint (``.ckpt``, read with ``weights_only=True``: no code runs).

    Raises:
        MissingFileError: nothing at ``path``, no ``lineage.json`` in the folder, a checkpoint
            without a record, or a file that is not a lineage record.
    """
    path = Path(path)
    if path.is_dir():
        file = path / LINEAGE_FILE
        if not file.is_file():
            raise MissingFileError(
                f"{path} holds no {LINEAGE_FILE}: it is not a run folder of a lifecycle run of "
                "this version. Fix: give a run folder (<root>/<stage>/version_N) written by "
                "`lifecycle fit`/`test`/`clean` or `lifecycle run`."
            )
        path = file
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist. {TARGET_HELP}")
    if path.suffix == ".ckpt":
        checkpoint = _load_checkpoint(path)
        record = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
        if not isinstance(record, dict):
            raise MissingFileError(
                f"{path} holds no lineage record (no `{CHECKPOINT_KEY}` entry): it was not "
                "written by a lifecycle run of this version. Fix: train it again with "
                "`lifecycle fit` (or `lifecycle run`), whose LineageCallback embeds the record "
                f"in every checkpoint, or read the {LINEAGE_FILE} of the run folder it came from."
            )
        return record
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MissingFileError(
            f"{path} is not a lineage record ({err}). Fix: give a {LINEAGE_FILE} written by a "
            "lifecycle run, its run folder, or a checkpoint."
        ) from err
    if not isinstance(record, dict) or record.get("format", FORMAT) != FORMAT:
        raise MissingFileError(
            f"{path} is not a lineage record (no `format: {FORMAT}`). Fix: give a "
            f"{LINEAGE_FILE} written by a lifecycle run, its run folder, or a checkpoint."
        )
    return record


def _load_checkpoint(path: Path) -> Any:
    import zipfile

    import torch

    from lifecycle.artifacts import checkpoint_globals

    # mmap: only the pickled structure is read, not every tensor; a legacy (pre-zip) file can
    # be neither mapped nor scanned for the classes its hyperparameters name
    modern = zipfile.is_zipfile(path)
    with torch.serialization.safe_globals(checkpoint_globals(path) if modern else []):
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=modern)


def update_record(folder: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Read ``<folder>/lineage.json`` (an empty record when there is none), set ``fields`` in
    it, write it back (:func:`write_record`) and return it."""
    file = Path(folder) / LINEAGE_FILE
    record = read_record(file) if file.is_file() else {}
    record.update(fields)
    write_record(folder, record)
    return record


# ----------------------------------------------------------------------------- metrics
def headline_metrics(folder: str | os.PathLike) -> dict[str, float]:
    """The headline metrics of a run folder, ``{}`` when it has none.

    - the last value of each ``val/*`` and ``test/*`` column of ``metrics.csv`` (CSVLogger);
    - the scalar test metrics of ``metrics.json`` (:class:`~lifecycle.evaluation.EvaluationReport`,
      as ``test/<name>``), which replace the CSV's ``test/*``;
    - a clean run's ``report.json``: ``records``, ``kept`` and ``removed``.
    """
    folder = Path(folder)
    metrics: dict[str, float] = {}
    table = folder / "metrics.csv"
    if table.is_file():
        try:
            with open(table, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    for key, value in row.items():
                        if key and key.startswith(("val/", "test/")) and value not in ("", None):
                            number = _number(value)
                            if number is not None:
                                metrics[key] = number
        except (OSError, csv.Error, UnicodeDecodeError):
            pass
    report = _json(folder / "metrics.json")
    if isinstance(report, dict) and isinstance(report.get("metrics"), dict):
        for key, value in report["metrics"].items():
            number = _number(value)
            if number is not None:
                metrics[key if key.startswith("test/") else f"test/{key}"] = number
    cleaning = _json(folder / "report.json")
    if isinstance(cleaning, dict) and "kept" in cleaning and "records" in cleaning:
        records, kept = _number(cleaning["records"]), _number(cleaning["kept"])
        if records is not None and kept is not None:
            metrics.update(records=records, kept=kept, removed=records - kept)
    return metrics


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def headline(metrics: dict[str, float] | None) -> str | None:
    """The one metric a summary shows, as ``"test/acc=0.8100"``: a ``test/`` accuracy, else the
    first ``test/`` metric, the same among ``val/``, else a clean run's ``kept``; ``None``
    when there are none."""
    metrics = metrics or {}
    for prefix in ("test/", "val/"):
        names = sorted(k for k in metrics if k.startswith(prefix))
        preferred = [k for k in names if "acc" in k] or [k for k in names if "loss" in k] or names
        if preferred:
            return f"{preferred[0]}={_format_number(metrics[preferred[0]])}"
    if "kept" in metrics:
        removed = metrics.get("removed")
        tail = f", removed={_format_number(removed)}" if removed is not None else ""
        return f"kept={_format_number(metrics['kept'])}{tail}"
    if metrics:
        name = sorted(metrics)[0]
        return f"{name}={_format_number(metrics[name])}"
    return None


def _format_number(value: Any) -> str:
    if isinstance(value, int | float) and float(value).is_integer():
        return str(int(value))
    return f"{value:.4f}" if isinstance(value, int | float) else str(value)


# ----------------------------------------------------------------------------- callback
class LineageCallback(Callback):
    """Keeps the run's lineage record: ``lineage.json`` in the run folder and the same record in
    every checkpoint (``checkpoint["lifecycle_lineage"]``). The default callback of every
    ``lifecycle`` run.

    At ``setup`` it reads the record the pipeline runner wrote into the run folder, or starts a
    standalone one (a run made by hand: the stage is the run folder's parent's name, the config
    the run's ``config.yaml`` once it is written), and adds the module's class and parameter
    counts. A standalone record is marked ``finished`` (with its headline metrics) at
    ``teardown``, or ``failed`` with the error; a runner's record (it has a ``fingerprint``) is
    left for the runner to close. Only rank 0 writes; every rank embeds rank 0's record. A run
    without a logger has no run folder, and no record.
    """

    def __init__(self):
        self.record: dict[str, Any] | None = None
        self.folder: Path | None = None
        self._ready = False
        self._clock = 0.0

    # -- hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        """Read or start the record, with the module's parameter counts, and write it."""
        self._ready = False
        if not trainer.loggers:
            self.record = self.folder = None
            return
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
        if log_dir is None:
            self.record = self.folder = None
            return
        # the same run going on (`test` after `fit` in one command): the same record
        again = self.record is not None and self.folder == Path(log_dir)
        self.folder = Path(log_dir)
        if not again:
            self._clock = time.monotonic()
        record = None
        if trainer.is_global_zero:
            # `stage` is Lightning's TrainerFn (a str enum): as plain text, so that a
            # checkpoint holds nothing `torch.load(weights_only=True)` refuses
            command = str(getattr(stage, "value", stage))
            record = self._start(self.folder, command, self.record if again else None)
            record["model"] = model_summary(pl_module)
            record = _plain(record)
        self.record = _broadcast(trainer, record)
        if trainer.is_global_zero:
            write_record(self.folder, self.record)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._refresh(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._refresh(trainer, pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self._refresh(trainer, pl_module)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._refresh(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Embed the current record (every rank the same one; nothing is written here)."""
        if self.record is not None:
            checkpoint[CHECKPOINT_KEY] = copy.deepcopy(self.record)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """A standalone record: ``finished``, with ``ended``, ``seconds`` and ``metrics``."""
        if self.record is None or self.folder is None or not trainer.is_global_zero:
            return
        if "fingerprint" in self.record or self.record.get("status") != "running":
            return
        self._fill_config(self.record)
        metrics = headline_metrics(self.folder) or _logged_metrics(trainer)
        self.record.update(self._ended(), status="finished", metrics=metrics)
        write_record(self.folder, self.record)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A standalone record: ``failed``, with the error's type and message."""
        if self.record is None or self.folder is None or not trainer.is_global_zero:
            return
        if "fingerprint" in self.record:
            return
        kind = type(exception)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        self.record.update(
            self._ended(), status="failed", error={"type": name, "message": str(exception)}
        )
        write_record(self.folder, self.record)

    # -- helpers
    def _start(self, folder: Path, stage: str, going_on: dict | None) -> dict[str, Any]:
        file = folder / LINEAGE_FILE
        record = None
        if going_on is not None:
            record = copy.deepcopy(going_on)
            if "fingerprint" not in record:
                for key in ("ended", "seconds", "error"):
                    record.pop(key, None)
                record["status"] = "running"
            self._fill_config(record)
            return record
        if file.is_file():
            try:
                record = read_record(file)
            except MissingFileError:
                record = None
        if record is not None and "fingerprint" in record:
            return record  # the pipeline runner's: it sets the status
        if record is not None:  # an earlier standalone record of this folder (a resumed run)
            for key in ("ended", "seconds", "error"):
                record.pop(key, None)
            record.update(command=stage, status="running")
            record["attempts"] = int(record.get("attempts") or 1) + 1
        else:
            record = new_record(folder.parent.name, stage, folder)
        self._fill_config(record)
        return record

    def _fill_config(self, record: dict) -> bool:
        if "config" in record or self.folder is None:
            return False
        config = read_config(self.folder / "config.yaml")
        if config is None:
            return False
        flat = flatten(_plain(config))
        record.update(config=flat, config_hash=config_hash(flat))
        return True

    def _refresh(self, trainer, pl_module) -> None:
        # once per command, on every rank (the broadcast is collective): the config.yaml that
        # LightningCLI writes after this callback's setup, and the parameter counts of a model
        # that configure_model built or a strategy wrapped
        if self.record is None or self._ready:
            return
        self._ready = True
        record = None
        if trainer.is_global_zero:
            record = copy.deepcopy(self.record)
            changed = self._fill_config(record)
            model = model_summary(pl_module)
            if model["parameters"] and model != record.get("model"):
                record["model"], changed = model, True
            record = _plain(record) if changed else None
        record = _broadcast(trainer, record)
        if record is not None:
            self.record = record
            if trainer.is_global_zero:
                write_record(self.folder, self.record)

    def _ended(self) -> dict[str, Any]:
        return {"ended": now(), "seconds": round(time.monotonic() - self._clock, 3)}


def _broadcast(trainer, obj: Any) -> Any:
    strategy = getattr(trainer, "strategy", None)
    if strategy is None or trainer.world_size == 1:
        return obj
    return strategy.broadcast(obj, src=0)


def model_summary(pl_module) -> dict[str, Any]:
    """``{"class", "parameters", "trainable"}`` of a module (DeepSpeed's partitioned
    parameters by their whole size)."""
    total = trainable = 0
    for parameter in pl_module.parameters():
        count = int(getattr(parameter, "ds_numel", 0) or parameter.numel())
        total += count
        trainable += count if parameter.requires_grad else 0
    kind = type(pl_module)
    return {
        "class": f"{kind.__module__}.{kind.__qualname__}",
        "parameters": total,
        "trainable": trainable,
    }


def read_config(path: str | os.PathLike) -> dict | None:
    """A run's ``config.yaml`` as a dict, ``None`` when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _logged_metrics(trainer) -> dict[str, float]:
    metrics = {}
    for key, value in sorted(getattr(trainer, "callback_metrics", {}).items()):
        if key.startswith(("val/", "test/")):
            number = _number(value.item() if hasattr(value, "item") else value)
            if number is not None:
                metrics[key] = number
    return metrics


# ----------------------------------------------------------------------------- the DAG
def _version_number(folder: Path) -> int:
    match = re.fullmatch(r"version_(\d+)", folder.name)
    return int(match.group(1)) if match else -1


def stage_record(stage_folder: str | os.PathLike) -> tuple[Path, dict] | None:
    """The run folder and record a pipeline used last in a stage folder (``<root>/<stage>``):
    the newest ``version_N`` whose record is ``finished``, else the newest record; ``None``
    when no ``version_N`` holds one."""
    found = []
    for folder in Path(stage_folder).glob("version_*"):
        if _version_number(folder) >= 0 and (folder / LINEAGE_FILE).is_file():
            try:
                found.append((_version_number(folder), folder, read_record(folder)))
            except MissingFileError:
                continue
    if not found:
        return None
    found.sort(key=lambda item: item[0])
    finished = [item for item in found if item[2].get("status") == "finished"]
    _, folder, record = (finished or found)[-1]
    return folder, record


def pipeline_records(root: str | os.PathLike) -> dict[str, dict]:
    """The record of each stage of a pipeline folder, by stage name (see :func:`stage_record`
    for which version's)."""
    records = {}
    root = Path(root)
    for stage_folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        found = stage_record(stage_folder)
        if found is not None:
            records[found[1].get("stage") or stage_folder.name] = found[1]
    return records


@dataclass
class _Node:
    key: str  # in the graph: the stage's name, or ``data:<source>`` for raw data
    name: str
    record: dict | None = None
    folder: Path | None = None  # where the run folder is now
    missing: str | None = None  # why there is no record
    raw: bool = False
    depth: int = 0


@dataclass
class _Edge:
    source: str
    target: str
    output: str
    field: str = ""
    hash: str | None = None


@dataclass
class _Graph:
    title: str
    nodes: dict[str, _Node] = field(default_factory=dict)
    edges: list[_Edge] = field(default_factory=list)
    default_picture: Path | None = None
    target_record: dict | None = None  # the record of a run folder or checkpoint target

    def sources(self, name: str) -> list[_Edge]:
        return [e for e in self.edges if e.target == name]

    def targets(self, name: str) -> list[_Edge]:
        return [e for e in self.edges if e.source == name]

    def order(self) -> list[_Node]:
        def key(node: _Node):
            started = (node.record or {}).get("started") or ""
            return node.depth, started, node.name

        return sorted(self.nodes.values(), key=key)


def _relocate(recorded: str, anchor_recorded: str | None, anchor_found: Path | None) -> Path:
    """Where a folder a record names is now: as recorded, else at the same place relative to the
    pipeline folder as found (a pipeline folder that was moved or copied, or read from
    elsewhere than where it ran)."""
    path = Path(recorded)
    if path.exists() or not anchor_recorded or anchor_found is None:
        return path
    recorded_root, found_root = Path(anchor_recorded).parent.parent, anchor_found.parent.parent
    try:
        return found_root / path.relative_to(recorded_root)
    except ValueError:
        pass
    # the last two parts (<stage>/version_N) under the found pipeline folder
    candidate = found_root.joinpath(*path.parts[-2:]) if len(path.parts) >= 2 else path
    return candidate if candidate.exists() else path


# what a stage's record gains when it ends
ENDED_FIELDS = ("status", "ended", "seconds", "metrics", "outputs", "error")


def _build_graph(target: str | os.PathLike) -> _Graph:
    target = Path(target)
    if not target.exists():
        raise MissingFileError(f"{target} does not exist. {TARGET_HELP}")
    start: list[tuple[str, dict, Path]] = []
    if target.is_file():
        record = read_record(target)
        folder = Path(record.get("folder") or target.parent)
        if not folder.exists():
            if target.suffix == ".ckpt":
                folder = (
                    target.parent.parent if target.parent.name == "checkpoints" else target.parent
                )
            else:
                folder = target.parent
        live = folder / LINEAGE_FILE
        if target.suffix == ".ckpt" and live.is_file():
            # the checkpoint holds the record as it was when saved (still running): its stage's
            # own record, when it is the same run, tells how it ended
            with contextlib.suppress(ValueError, OSError):
                ended = json.loads(live.read_text())
                if ended.get("fingerprint", "") == record.get("fingerprint", ""):
                    record = {**record, **{k: ended[k] for k in ENDED_FIELDS if k in ended}}
        start.append((record.get("stage") or folder.parent.name, record, folder))
        title = f"lineage of {target}"
        picture = (
            target.with_name(f"{target.stem}.lineage.png")
            if target.suffix == ".ckpt"
            else target.parent / "lineage.png"
        )
        graph = _Graph(title, default_picture=picture, target_record=record)
    elif (target / LINEAGE_FILE).is_file():
        record = read_record(target)
        start.append((record.get("stage") or target.parent.name, record, target))
        graph = _Graph(f"lineage of {target}", default_picture=target / "lineage.png",
                       target_record=record)  # fmt: skip
    elif (found := stage_record(target)) is not None:
        folder, record = found
        start.append((record.get("stage") or target.name, record, folder))
        graph = _Graph(f"lineage of {folder}", default_picture=target / "lineage.png",
                       target_record=record)  # fmt: skip
    else:
        stages = [p for p in sorted(target.iterdir()) if p.is_dir()]
        for stage_folder in stages:
            found = stage_record(stage_folder)
            if found is not None:
                start.append((found[1].get("stage") or stage_folder.name, found[1], found[0]))
        if not start:
            raise MissingFileError(
                f"{target} holds no lineage records (no {LINEAGE_FILE} in it, nor in "
                f"<stage>/version_N/ under it). {TARGET_HELP}"
            )
        names = {(r.get("pipeline") or {}).get("name") for _, r, _ in start} - {None}
        name = f"pipeline {sorted(names)[0]}" if names else "pipeline"
        graph = _Graph(f"lineage of {name} ({target})", default_picture=target / "lineage.png")
    for name, record, folder in start:
        graph.nodes[name] = _Node(name, name, record, folder)
    pending = list(start)
    while pending:
        name, record, folder = pending.pop(0)
        for field_name, spec in sorted((record.get("inputs") or {}).items()):
            if not isinstance(spec, dict):
                continue
            origin = str(spec.get("from") or "")
            source = spec.get("stage") or origin.partition(".")[0] or None
            output = spec.get("output") or origin.partition(".")[2] or field_name
            if source is None:  # a path given by hand: a raw input
                label = str(spec.get("path") or field_name)
                graph.nodes.setdefault(f"data:{label}", _Node(f"data:{label}", label, raw=True))
                graph.edges.append(_Edge(f"data:{label}", name, field_name, field_name,
                                         spec.get("hash")))  # fmt: skip
                continue
            graph.edges.append(_Edge(source, name, output, field_name, spec.get("hash")))
            if source in graph.nodes:
                continue
            recorded = spec.get("folder")
            if not recorded:
                graph.nodes[source] = _Node(source, source, missing="its input names no run folder")
                continue
            where = _relocate(str(recorded), record.get("folder"), folder)
            try:
                upstream = read_record(where)
            except MissingFileError:
                graph.nodes[source] = _Node(source, source, folder=where,
                                            missing=f"no record at {where / LINEAGE_FILE}")  # fmt: skip
                continue
            graph.nodes[source] = _Node(source, source, upstream, where)
            pending.append((source, upstream, where))
    _add_raw_data(graph)
    _set_depths(graph)
    return graph


def _data_source(record: dict) -> str | None:
    config = record.get("config") or {}
    for key in DATA_FIELDS:
        value = config.get(key)
        if value not in (None, "", []):
            return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return None


def _add_raw_data(graph: _Graph) -> None:
    for node in list(graph.nodes.values()):
        if node.raw or node.record is None:
            continue
        if any(not graph.nodes[e.source].raw for e in graph.sources(node.key)):
            continue  # it reads an earlier stage: not a first stage
        source = _data_source(node.record)
        if source is not None:
            key = f"data:{source}"
            graph.nodes.setdefault(key, _Node(key, source, raw=True))
            graph.edges.append(_Edge(key, node.key, "data"))


def _set_depths(graph: _Graph) -> None:
    depths: dict[str, int] = {}
    has_raw = any(n.raw for n in graph.nodes.values())

    def depth(name: str, seen: frozenset = frozenset()) -> int:
        if name in depths:
            return depths[name]
        node = graph.nodes[name]
        if node.raw:
            value = 0
        else:
            parents = [e.source for e in graph.sources(name) if e.source not in seen]
            value = max((depth(p, seen | {name}) + 1 for p in parents), default=int(has_raw))
        depths[name] = value
        return value

    for name in graph.nodes:
        graph.nodes[name].depth = depth(name)


def lineage_tree(target: str | os.PathLike) -> str:
    """The lineage of a pipeline folder, a stage's run folder or a checkpoint as text: the raw
    data, then each stage from the first to the final model with its command, status, folder,
    headline metric, config hash and inputs (``<- pretrain.backbone (sha256:1a2b3c4d5e6f)``).
    For a run folder or a checkpoint, its own record and those of the stages upstream of it,
    read from the run folders its inputs name; a missing one is said so.

    Raises:
        MissingFileError: nothing at ``target``, or no lineage record there.
    """
    return _tree_text(_build_graph(target))


def _tree_text(graph: _Graph) -> str:
    nodes = graph.order()
    raw = [n for n in nodes if n.raw]
    stages = [n for n in nodes if not n.raw]
    lines = [graph.title]
    if raw:
        lines.append("raw data")
        for node in raw:
            lines.append(f"  {node.name}")
    finals = {n.key for n in stages if not graph.targets(n.key)}
    lines.append("stages")
    for i, node in enumerate(stages):
        last = i == len(stages) - 1
        branch, rail = ("└─ ", "     ") if last else ("├─ ", "│    ")
        if node.record is None:
            lines.append(f"  {branch}{node.name}: record missing ({node.missing})")
        else:
            record = node.record
            final = "  <- final model" if node.key in finals and len(stages) > 1 else ""
            lines.append(
                f"  {branch}{node.name} [{record.get('command', '?')}, "
                f"{record.get('status', '?')}] {record.get('folder', node.folder)}{final}"
            )
            details = [f"config {short_hash(record.get('config_hash'))}"]
            metric = headline(record.get("metrics"))
            if metric:
                details.insert(0, metric)
            model = record.get("model") or {}
            if model.get("class") and isinstance(model.get("parameters"), int):
                name = model["class"].rsplit(".", 1)[-1]
                details.append(f"{name} {model['parameters']:,} parameters")
            lines.append(f"  {rail}{' · '.join(details)}")
            if record.get("error"):
                error = record["error"]
                lines.append(f"  {rail}error {error.get('type')}: {error.get('message')}")
        for edge in sorted(graph.sources(node.key), key=lambda e: (e.source, e.output)):
            source = graph.nodes[edge.source]
            if source.raw:
                lines.append(f"  {rail}<- data {source.name}")
            else:
                missing = " [record missing]" if source.record is None else ""
                lines.append(
                    f"  {rail}<- {edge.source}.{edge.output} ({short_hash(edge.hash)}){missing}"
                    + (f" as {edge.field}" if edge.field and edge.field != edge.output else "")
                )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the picture
STATUS_COLOURS = {
    "finished": "#d8f0d2",
    "running": "#fff3c4",
    "failed": "#f8d0cc",
    None: "#e6e6e6",
}
RAW_COLOUR = "#d6e6f5"


def draw_lineage(target: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Draw the lineage of ``target`` (as :func:`lineage_tree` reads it) as a PNG: the raw data
    at the left, each stage a box (name, command and status, headline metric) in a column by its
    depth, arrows labelled with the output each stage passed on.

    Returns:
        The path of the picture.
    """
    return _draw(_build_graph(target), Path(out))


def _draw(graph: _Graph, out: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as Line

    # one arrow per (source, target), labelled with every output it carries
    pairs: dict[tuple[str, str], list[str]] = {}
    for edge in graph.edges:
        if edge.source in graph.nodes and edge.target in graph.nodes:
            labels = pairs.setdefault((edge.source, edge.target), [])
            if edge.output not in labels:
                labels.append(edge.output)
    depth = {key: node.depth for key, node in graph.nodes.items()}
    # a layered layout: a column per depth; an arrow that skips columns passes through a free
    # slot in each (a waypoint), so it never crosses a box
    columns: dict[int, list[str]] = {}
    for node in graph.order():
        columns.setdefault(node.depth, []).append(node.key)
    chains: dict[tuple[str, str], list[str]] = {}
    before: dict[str, list[str]] = {}
    after: dict[str, list[str]] = {}
    for source, target in pairs:
        chain = [f"\0{source}->{target}@{d}" for d in range(depth[source] + 1, depth[target])]
        for d, waypoint in zip(range(depth[source] + 1, depth[target]), chain, strict=True):
            columns[d].append(waypoint)
            depth[waypoint] = d
        chains[(source, target)] = chain
        steps = [source, *chain, target]
        for a, b in zip(steps, steps[1:], strict=False):
            after.setdefault(a, []).append(b)
            before.setdefault(b, []).append(a)
    # order each column by the mean slot of its neighbours (fewer crossings), down and up
    slot = {key: i for column in columns.values() for i, key in enumerate(column)}
    for sweep in range(4):
        neighbours, order = (
            (before, sorted(columns)) if sweep % 2 == 0 else (after, sorted(columns, reverse=True))
        )
        for d in order:

            def mean_slot(key: str, neighbours: dict = neighbours) -> float:
                near = [slot[k] for k in neighbours.get(key, []) if k in slot]
                return sum(near) / len(near) if near else slot[key]

            columns[d].sort(key=mean_slot)
            # centred: slots of columns of different sizes line up around the middle
            for i, key in enumerate(columns[d]):
                slot[key] = i - (len(columns[d]) - 1) / 2
    width, height, gap_x, gap_y = 3.4, 1.35, 5.8, 2.0
    position = {key: (depth[key] * gap_x, -slot[key] * gap_y) for key in slot}

    fig = Figure()
    FigureCanvasAgg(fig)  # draws with Agg whatever pyplot's backend is
    ax = fig.add_axes((0, 0, 1, 0.9))
    ax.set_axis_off()
    for key, node in graph.nodes.items():
        x, y = position[key]
        if node.raw:
            colour, style, lines = RAW_COLOUR, "-", ["data", _wrap(node.name)]
        elif node.record is None:
            colour, style, lines = STATUS_COLOURS[None], "--", [node.name, "record missing"]
        else:
            record = node.record
            status = record.get("status")
            colour, style = STATUS_COLOURS.get(status, STATUS_COLOURS[None]), "-"
            lines = [node.name, f"{record.get('command', '?')} · {status or '?'}"]
            metric = headline(record.get("metrics"))
            lines += [metric] if metric else []
        box = FancyBboxPatch(
            (x - width / 2, y - height / 2), width, height,
            boxstyle="round,pad=0.02,rounding_size=0.15", facecolor=colour, edgecolor="#444444",
            linestyle=style, linewidth=1.2,
        )  # fmt: skip
        ax.add_patch(box)
        ax.text(x, y + 0.34, _wrap(lines[0]), ha="center", va="center", fontsize=10,
                fontweight="bold")  # fmt: skip
        ax.text(x, y - 0.2, "\n".join(lines[1:]), ha="center", va="center", fontsize=8,
                linespacing=1.4)  # fmt: skip

    def spread(key: str, ends: list[str], end: str, side: float) -> tuple[float, float]:
        # where an arrow leaves or enters a box: apart from the others at that side, in the
        # order of where they come from or go to
        ends = sorted(ends, key=lambda k: -position[k][1])
        x, y = position[key]
        if key.startswith("\0"):  # a waypoint: straight through
            return x + side * width / 2, y
        room = min(height * 0.6, 0.3 * (len(ends) - 1))
        i = ends.index(end)
        return x + side * width / 2, y + room / 2 - room * i / max(len(ends) - 1, 1)

    for (source, target), labels in pairs.items():
        steps = [source, *chains[(source, target)], target]
        points = [spread(source, after[source], steps[1], +1)]
        for waypoint in steps[1:-1]:
            points += [spread(waypoint, [], "", -1), spread(waypoint, [], "", +1)]
        points.append(spread(target, before[target], steps[-2], -1))
        codes = [Line.MOVETO] + [Line.LINETO] * (len(points) - 1)
        arrow = FancyArrowPatch(
            path=Line(points, codes), arrowstyle="-|>", mutation_scale=14, color="#333333",
            linewidth=1.1,
        )  # fmt: skip
        ax.add_patch(arrow)
        (x1, y1), (x2, y2) = points[0], points[1]
        ax.text(x1 + 0.45 * (x2 - x1), y1 + 0.45 * (y2 - y1), ", ".join(labels), ha="center",
                va="center", fontsize=8, style="italic",
                bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none",
                          alpha=0.9))  # fmt: skip
    xs = [x for x, _ in position.values()]
    ys = [y for _, y in position.values()]
    left, right = min(xs) - width / 2 - 0.3, max(xs) + width / 2 + 0.3
    bottom, top = min(ys) - height / 2 - 0.3, max(ys) + height / 2 + 0.3
    scale = 0.5  # inches per unit of the layout, the same across and down
    widen = max(0.0, 6.0 / scale - (right - left)) / 2  # at least 6 inches, for the title
    ax.set_xlim(left - widen, right + widen)
    ax.set_ylim(bottom, top)
    fig.set_size_inches((right - left + 2 * widen) * scale, (top - bottom) * scale / 0.9)
    fig.suptitle(graph.title, fontsize=10, y=0.97)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, facecolor="white")
    return out


def _wrap(text: str, width: int = 28) -> str:
    return text if len(text) <= width else f"…{text[-(width - 1) :]}"


# ----------------------------------------------------------------------------- the command
def lineage_command(args: list[str]) -> int:
    """``lifecycle lineage TARGET [--out PATH] [--json]``: print the lineage of a pipeline
    folder, a stage's run folder or a checkpoint (:func:`lineage_tree`, or the records as JSON
    with ``--json``), and draw it (:func:`draw_lineage`; default ``lineage.png`` in the folder,
    or ``<checkpoint stem>.lineage.png`` beside a checkpoint).

    Returns:
        0.

    Raises:
        MissingFileError: nothing at ``TARGET``, or no lineage record there.
    """
    parser = argparse.ArgumentParser(
        prog="lifecycle lineage",
        description="Show where a model came from: the stages, their configs, inputs and "
        "metrics, from the raw data to the final model.",
    )
    parser.add_argument(
        "target",
        help="a pipeline folder, a stage's run folder (<root>/<stage>/version_N) or a checkpoint",
    )
    parser.add_argument("--out", default=None, help="the picture (default: beside the target)")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    options = parser.parse_args(args)
    target = Path(options.target)
    if not target.exists():
        raise MissingFileError(f"{target} does not exist. {TARGET_HELP}")
    graph = _build_graph(target)
    if options.json:
        if graph.target_record is not None:
            shown: Any = graph.target_record
        else:
            shown = {"root": str(target), "stages": pipeline_records(target)}
        print(json.dumps(shown, indent=2, default=str))
    else:
        print(_tree_text(graph), end="")
    out = Path(options.out) if options.out else graph.default_picture
    path = _draw(graph, out)
    print(f"wrote {path}")
    return 0
