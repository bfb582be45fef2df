"""The pipeline as MLflow runs (``tracking: mlflow`` in a pipeline recipe).

One ``lifecycle run`` is one parent run, named after the pipeline, with the recipe as its
params and ``pipeline.yaml`` artifact; each stage is a nested run (tag ``mlflow.parentRunId``)
named after the stage, cached stages too (tagged ``cached: true``), so the parent always shows
every stage. A stage's run holds its resolved config as params, its lineage (status, config
hash, fingerprint, code, inputs with their hashes) as tags, its final metrics, the small files
of its run folder as artifacts (``lineage.json``, ``config.yaml``, ``metrics.json``, figures,
the cleaning report, ``manifest.csv``; never checkpoints), and, through Lightning's
:class:`~lightning.pytorch.loggers.MLFlowLogger` (:func:`stage_loggers`), every metric the
stage logs by step. :meth:`MlflowTracker.register_model` puts a stage's final checkpoint into
the model registry, a new version tagged with its lineage.

By default everything lies in the pipeline folder: the runs in ``<root>/mlflow.db`` (SQLite),
their artifacts under ``<root>/mlartifacts``; ``mlflow ui --backend-store-uri
sqlite:///<root>/mlflow.db`` shows them. A ``tracking_uri`` (e.g. ``http://server:5000``), or
else ``MLFLOW_TRACKING_URI``, sends them to that tracking server instead.

MLflow is optional (the ``tracking`` extra: ``pip install -e ".[tracking]"``); it is imported
only when tracking is asked for, so importing this module costs nothing without it. Under DDP
only the runner (rank 0) uses the tracker, and ``MLFlowLogger`` logs from rank 0 alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lifecycle.errors import ConfigError
from lifecycle.pipeline.lineage import flatten

log = logging.getLogger(__name__)

# the environment a stage's process gets from MlflowTracker.start_stage, read by stage_loggers
RUN_ID_ENV = "LIFECYCLE_MLFLOW_RUN_ID"
TRACKING_URI_ENV = "LIFECYCLE_MLFLOW_TRACKING_URI"
DATABASE = "mlflow.db"
ARTIFACTS = "mlartifacts"
# the files of a stage's run folder that become its run's artifacts (checkpoints never do: the
# final model goes to the registry through register_model)
STAGE_ARTIFACTS = (
    "lineage.json",
    "config.yaml",
    "metrics.json",
    "report.md",
    "report.json",
    "manifest.csv",
)
STAGE_FIGURES = "*.png"
# MLflow's limits (mlflow.utils.validation): key length, param and tag value length, entities
# per log_batch call
MAX_KEY_LENGTH = 250
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
MAX_PER_BATCH = 100
# a record's status -> MLflow's run status
RUN_STATUS = {
    "finished": "FINISHED",
    "failed": "FAILED",
    "killed": "KILLED",
    "interrupted": "KILLED",
}
INSTALL = 'install the `tracking` extra: pip install -e ".[tracking]" (or pip install "mlflow>=3")'


def require_mlflow() -> Any:
    """The ``mlflow`` module, or a :class:`ConfigError` saying how to install it.

    Raises:
        ConfigError: when mlflow cannot be imported.
    """
    try:
        import mlflow
    except ImportError as error:
        raise ConfigError(
            f"MLflow tracking needs the mlflow package, which cannot be imported ({error}). "
            f"Fix: {INSTALL}, or set `tracking: none` in the pipeline recipe."
        ) from error
    return mlflow


def stage_loggers() -> list:
    """The extra Lightning loggers of a stage that a tracked pipeline runs.

    When ``LIFECYCLE_MLFLOW_RUN_ID`` is set (by :meth:`MlflowTracker.start_stage`, for the
    stage's process), an :class:`~lightning.pytorch.loggers.MLFlowLogger` that logs into that
    existing run (it creates none), so the metrics Lightning logs by step land in the stage's
    nested run; otherwise none. The logger's ``finalize`` marks the run FINISHED (or FAILED)
    when training ends; :meth:`MlflowTracker.end_stage` sets the final status afterwards.

    Returns:
        ``[MLFlowLogger(...)]`` or ``[]``.

    Raises:
        ConfigError: the variable is set but mlflow is not installed.
    """
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        return []
    require_mlflow()
    from lightning.pytorch.loggers import MLFlowLogger

    tracking_uri = os.environ.get(TRACKING_URI_ENV) or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ConfigError(
            f"{RUN_ID_ENV} is set but {TRACKING_URI_ENV} is not: the stage cannot tell where its "
            f"MLflow run lives. Fix: set both (lifecycle run does) or unset {RUN_ID_ENV}."
        )
    return [MLFlowLogger(tracking_uri=tracking_uri, run_id=run_id)]


@contextlib.contextmanager
def kept_tracking_uri() -> Iterator[None]:
    """Undo, on exit, what a stage run in this process did to MLflow's global tracking URI.

    Lightning's ``MLFlowLogger`` calls ``mlflow.set_tracking_uri``, which also sets
    ``MLFLOW_TRACKING_URI`` in ``os.environ`` "so that subprocesses inherit it". After a tracked
    stage ran in-process, the next pipeline of the same process (a notebook's, a test's) would
    then send its runs to the first one's store. The variable and MLflow's global URI are put
    back as they were (unset when they were unset)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        if os.environ.get("MLFLOW_TRACKING_URI") != before:
            mlflow = sys.modules.get("mlflow")
            if mlflow is not None:
                mlflow.set_tracking_uri(before)  # None: MLflow's default, the variable unset
            if before is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before


def mlflow_key(key: Any) -> str:
    """``key`` as MLflow accepts a param, metric or tag name: only letters, digits and
    ``_ - . / space`` (anything else becomes ``_``), no empty, ``.`` or ``..`` path segment, at
    most 250 characters (a longer key keeps its start and a hash of the whole)."""
    clean = re.sub(r"[^\w./\- ]", "_", str(key))
    parts = [p if p not in (".", "..") else "_" for p in clean.split("/") if p]
    clean = "/".join(parts) or "_"
    if len(clean) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(str(key).encode()).hexdigest()[:8]
        clean = f"{clean[: MAX_KEY_LENGTH - 9].rstrip('/')}-{digest}"
    return clean


def mlflow_value(value: Any, limit: int) -> str:
    """``value`` as an MLflow param or tag value: strings as they are, anything else as JSON
    (``true``, ``null``, ``[1, 2]``, as in a recipe), cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chunks(items: list, size: int = MAX_PER_BATCH) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class MlflowTracker:
    """A pipeline's runs in MLflow: the parent run, one nested run per stage, the registry.

    The runner calls, in order: :meth:`start_pipeline`; for each stage :meth:`start_stage`
    (giving its process the environment it returns), :meth:`end_stage` and, for the stage whose
    model is the pipeline's result, :meth:`register_model`; then :meth:`finish`.

    Args:
        root: the pipeline folder; the default store is ``<root>/mlflow.db`` with artifacts
            under ``<root>/mlartifacts``.
        tracking_uri: an MLflow tracking URI (``http://server:5000``, ``sqlite:///path.db``)
            used as given (a new experiment in another SQLite file keeps its artifacts in
            ``mlartifacts`` beside it); ``None``: ``MLFLOW_TRACKING_URI`` when set, else the
            default store.
        experiment: the MLflow experiment; ``None``: the pipeline's name.
        registered_model: the registered model's name; ``None``: the pipeline's name.

    Raises:
        ConfigError: mlflow is not installed.
    """

    def __init__(
        self,
        root: str | Path,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        registered_model: str | None = None,
    ) -> None:
        require_mlflow()
        from mlflow import MlflowClient

        self.root = Path(root).resolve()
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.local = uri is None
        if uri is None:
            self.root.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(self.root / DATABASE).as_posix()}"
        self.tracking_uri = uri
        self.experiment = experiment
        self.registered_model = registered_model
        self.client = MlflowClient(
            tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri
        )
        self.pipeline: str | None = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.stage_runs: dict[str, str] = {}
        self._open: set[str] = set()

    # ----------------------------------------------------------------------------- the pipeline
    def start_pipeline(self, name: str, recipe: Mapping[str, Any]) -> str:
        """Create the pipeline's parent run, named ``name``, in the experiment (made when
        missing, with its artifacts under ``<root>/mlartifacts`` for the default store).

        Args:
            name: the pipeline's name.
            recipe: the pipeline recipe, logged as flattened params (``stages.clean.command``)
                and as the artifact ``pipeline.yaml``.

        Returns:
            The parent run's id.

        Raises:
            ConfigError: the tracking store cannot be used (a server that does not answer).
        """
        from mlflow.exceptions import MlflowException

        self.pipeline = name
        experiment = self.experiment or name
        try:
            self.experiment_id = self._experiment(experiment)
        except MlflowException as error:
            raise ConfigError(
                f"MLflow tracking at {self.tracking_uri} cannot set up experiment "
                f"{experiment!r}: {error}. Fix: start the tracking server or give another "
                "`tracking_uri` (or unset MLFLOW_TRACKING_URI for the local store in the "
                "pipeline folder)."
            ) from error
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"lifecycle.kind": "pipeline", "lifecycle.root": str(self.root)},
        )
        self.run_id = run.info.run_id
        plain = json.loads(json.dumps(dict(recipe), default=str))
        self._log_params(self.run_id, flatten(plain))
        self.client.log_dict(self.run_id, plain, "pipeline.yaml")
        return self.run_id

    def finish(self, status: str) -> None:
        """End the parent run with ``status`` (``finished``, ``failed`` or ``killed``, in either
        case); a stage run still open ends FAILED, or KILLED when the pipeline finished."""
        final = self._status(status)
        for stage in sorted(self._open):
            self.client.set_terminated(
                self.stage_runs[stage], "KILLED" if final == "FINISHED" else "FAILED"
            )
        self._open.clear()
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, final)

    # ----------------------------------------------------------------------------- the stages
    def start_stage(self, stage: str, command: str) -> dict[str, str]:
        """Create the stage's nested run (named ``stage``, tag ``mlflow.parentRunId``).

        Args:
            stage: the stage's name in the pipeline.
            command: its ``lifecycle`` subcommand (``fit``, ``clean``, ...), as a tag.

        Returns:
            The environment the stage's process needs for :func:`stage_loggers` to log into
            that run: ``{LIFECYCLE_MLFLOW_RUN_ID: ..., LIFECYCLE_MLFLOW_TRACKING_URI: ...}``.
        """
        if self.run_id is None or self.experiment_id is None:
            raise RuntimeError("MlflowTracker.start_stage before start_pipeline")
        run = self.client.create_run(
            self.experiment_id,
            run_name=stage,
            tags={
                "mlflow.parentRunId": self.run_id,
                "lifecycle.kind": "stage",
                "stage": stage,
                "command": command,
            },
        )
        self.stage_runs[stage] = run.info.run_id
        self._open.add(stage)
        return {RUN_ID_ENV: run.info.run_id, TRACKING_URI_ENV: self.tracking_uri}

    def end_stage(self, stage: str, record: Mapping[str, Any], folder: str | Path) -> None:
        """Log a stage's lineage record and run folder into its nested run and end it.

        A stage not started (a cached one) gets its nested run here. The run gets: the
        record's ``config`` as params (keys made valid for MLflow, values cut to its limit;
        a param Lightning already logged keeps its value); its ``metrics`` and ``seconds`` as
        metrics (also on the parent run as ``<stage>/<metric>``); tags ``status``, ``cached``,
        ``config_hash``, ``fingerprint``, ``git_commit``, ``git_dirty``, ``source_hash``,
        ``package_version``, ``versions.<package>``, ``model.class``, ``model.parameters``,
        ``input.<field>`` (``"<from> <hash>"``), ``output.<name>`` (the hash) and
        ``error.type`` / ``error.message``; the artifacts of :data:`STAGE_ARTIFACTS` and the
        ``*.png`` figures found in ``folder``. The run ends FINISHED, or FAILED (KILLED) by
        the record's ``status``.

        Args:
            stage: the stage's name.
            record: its lineage record (``lifecycle.pipeline.lineage``), with ``"cached": True``
                for a stage the runner did not run again.
            folder: the stage's run folder.
        """
        if stage not in self.stage_runs or stage not in self._open:
            self.start_stage(stage, str(record.get("command", "")))
        run_id = self.stage_runs[stage]
        existing = self.client.get_run(run_id).data.params
        params = {
            mlflow_key(k): mlflow_value(v, MAX_PARAM_LENGTH)
            for k, v in flatten(dict(record.get("config") or {})).items()
        }
        kept = {k: v for k, v in params.items() if k not in existing}
        for key in sorted(set(params) - set(kept)):
            if existing[key] != params[key]:
                log.debug("MLflow param %s of stage %s already logged; kept", key, stage)
        self._log_params(run_id, kept)
        self._log_tags(run_id, self._stage_tags(stage, record))
        metrics = {
            mlflow_key(k): n
            for k, v in dict(record.get("metrics") or {}).items()
            if (n := _number(v)) is not None
        }
        if (seconds := _number(record.get("seconds"))) is not None:
            metrics["seconds"] = seconds
        self._log_final_metrics(run_id, metrics)
        if self.run_id is not None and metrics:
            self._log_metrics(
                self.run_id, {mlflow_key(f"{stage}/{k}"): v for k, v in metrics.items()}
            )
        self._log_folder(run_id, Path(folder))
        self.client.set_terminated(run_id, self._status(str(record.get("status", "failed"))))
        self._open.discard(stage)

    def register_model(
        self, stage: str, checkpoint: str | Path, record: Mapping[str, Any]
    ) -> tuple[str, str]:
        """Register a stage's checkpoint as a new version of the pipeline's model.

        The file becomes an artifact of the stage's run (under ``model/``); the registered
        model (``registered_model``, else the pipeline's name) is created when missing; the new
        version's source is that artifact's URI and its run the stage's, with tags ``stage``,
        ``config_hash``, ``fingerprint``, ``git_commit``, ``source_hash``, ``input.<field>``
        (``"<from> <hash>"``) and ``lineage``: the record as compact JSON (without its
        ``config`` when the whole is longer than MLflow's 8000 characters for a tag, and cut
        there if still too long).

        Args:
            stage: the stage whose checkpoint it is.
            checkpoint: the checkpoint file.
            record: the stage's lineage record.

        Returns:
            ``(registered model name, version)``.
        """
        from mlflow.exceptions import MlflowException

        checkpoint = Path(checkpoint)
        if stage not in self.stage_runs:
            self.start_stage(stage, str(record.get("command", "")))
        run_id = self.stage_runs[stage]
        self.client.log_artifact(run_id, str(checkpoint), "model")
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model/{checkpoint.name}"
        name = self.registered_model or self.pipeline or self.root.name
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(
                name, tags={"pipeline": self.pipeline or self.root.name}
            )
        code = record.get("code") or {}
        tags = {
            "stage": stage,
            "config_hash": record.get("config_hash"),
            "fingerprint": record.get("fingerprint"),
            "git_commit": code.get("git_commit"),
            "source_hash": code.get("source_hash"),
            **self._input_tags(record),
            "lineage": _compact(record),
        }
        version = self.client.create_model_version(
            name,
            source,
            run_id=run_id,
            tags={k: mlflow_value(v, MAX_TAG_LENGTH) for k, v in tags.items() if v is not None},
            description=f"{self.pipeline or self.root.name} stage {stage}: {checkpoint.name}",
        )
        self.client.set_tag(run_id, "registered_model", f"{name}/{version.version}")
        return name, str(version.version)

    # ----------------------------------------------------------------------------- helpers
    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=self._artifact_location())

    def _artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: ``<root>/mlartifacts`` for the default
        store, ``mlartifacts`` beside the database for another SQLite file (MLflow would use
        ``./mlruns`` in the current folder), the server's choice for a server."""
        if self.local:
            return (self.root / ARTIFACTS).as_uri()
        if self.tracking_uri.startswith("sqlite:///"):
            database = Path(self.tracking_uri[len("sqlite:///") :]).resolve()
            return (database.parent / ARTIFACTS).as_uri()
        return None

    @staticmethod
    def _status(status: str) -> str:
        return RUN_STATUS.get(status.lower(), "FAILED")

    def _stage_tags(self, stage: str, record: Mapping[str, Any]) -> dict[str, Any]:
        code = record.get("code") or {}
        model = record.get("model") or {}
        error = record.get("error") or {}
        tags: dict[str, Any] = {
            "stage": stage,
            "command": record.get("command"),
            "status": record.get("status"),
            "cached": "true" if record.get("cached") else "false",
            "config_hash": record.get("config_hash"),
            "fingerprint": record.get("fingerprint"),
            "git_commit": code.get("git_commit"),
            "git_dirty": code.get("git_dirty"),
            "source_hash": code.get("source_hash"),
            "package_version": code.get("package_version"),
            "folder": record.get("folder"),
            "model.class": model.get("class"),
            "model.parameters": model.get("parameters"),
            "error.type": error.get("type"),
            "error.message": error.get("message"),
            **{f"versions.{k}": v for k, v in (record.get("versions") or {}).items()},
            **self._input_tags(record),
        }
        for name, output in (record.get("outputs") or {}).items():
            if isinstance(output, Mapping):
                tags[f"output.{name}"] = output.get("hash")
        return tags

    @staticmethod
    def _input_tags(record: Mapping[str, Any]) -> dict[str, str]:
        tags = {}
        for field, given in (record.get("inputs") or {}).items():
            if isinstance(given, Mapping):
                tags[f"input.{field}"] = f"{given.get('from')} {given.get('hash')}"
            else:
                tags[f"input.{field}"] = str(given)
        return tags

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(mlflow_key(k), mlflow_value(v, MAX_PARAM_LENGTH)) for k, v in params.items()]
        for chunk in _chunks(list({p.key: p for p in items}.values())):
            self.client.log_batch(run_id, params=chunk)

    def _log_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [
            RunTag(mlflow_key(k), mlflow_value(v, MAX_TAG_LENGTH))
            for k, v in tags.items()
            if v is not None
        ]
        for chunk in _chunks(items):
            self.client.log_batch(run_id, tags=chunk)

    def _log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for chunk in _chunks(items):
            self.client.log_batch(run_id, metrics=chunk)

    def _log_final_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        """Log ``metrics`` as a run's final values: a metric Lightning already logged by step
        gets the value at its last step (kept when equal), a new one step 0."""
        logged = self.client.get_run(run_id).data.metrics
        by_step: dict[int, dict[str, float]] = {}
        for key, value in metrics.items():
            step = 0
            if key in logged:
                history = self.client.get_metric_history(run_id, key)
                last = max(history, key=lambda m: (m.step, m.timestamp))
                if last.value == value:
                    continue
                step = last.step
            by_step.setdefault(step, {})[key] = value
        for step, values in by_step.items():
            self._log_metrics(run_id, values, step)

    def _log_folder(self, run_id: str, folder: Path) -> None:
        if not folder.is_dir():
            return
        files = [folder / name for name in STAGE_ARTIFACTS] + sorted(folder.glob(STAGE_FIGURES))
        for path in files:
            if path.is_file():
                self.client.log_artifact(run_id, str(path))


def _compact(record: Mapping[str, Any]) -> str:
    """The record as compact JSON that fits an MLflow tag: whole, else without ``config`` (the
    stage run's params and ``lineage.json`` artifact hold it), else cut."""
    text = json.dumps(record, separators=(",", ":"), default=str)
    if len(text) > MAX_TAG_LENGTH:
        text = json.dumps(
            {k: v for k, v in record.items() if k != "config"}, separators=(",", ":"), default=str
        )
    return mlflow_value(text, MAX_TAG_LENGTH)
