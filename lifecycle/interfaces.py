"""The seams between the toolkit's parts, declared in one place.

A stage (a LightningModule of :mod:`lifecycle.stages`) and a DataModule meet here and nowhere
else: what a stage reads from its DataModule and its backbone, what a stage needs the data to
be, and what the cleaning stage needs from a DataModule are each a :class:`typing.Protocol`
below. A user's own DataModule or backbone works with the stages when it has what the
protocol lists; a missing required attribute is a :class:`~lifecycle.errors.ConfigError`
naming it (:func:`require`), never a check silently skipped.

Data flows one way: a stage that needs the data in a particular form (a pretrained backbone's
normalization, a distillation teacher's tokenizer) declares it in :meth:`DeclaresDataNeeds.data_needs`;
a DataModule reads those needs once, at the start of its ``setup`` (or the cleaning stage
hands them over before :meth:`CleanableData.use_fold`), before it builds any dataset, so it is
built once and never rebuilt by the stage. The one read of data that builds a stage is the
language-model stages' vocabulary (the DataModule's ``tokenizer``, in their ``setup``).

What stages read (required members are annotations, optional ones are in the docstrings):

- :class:`ClassificationData`: ``num_classes``; optional ``class_names``, ``unlabeled_count``;
- :class:`RegressionData`: ``target_mean``, ``target_std`` (with ``standardize_target``);
- :class:`TokenizedData`: ``tokenizer``; optional ``max_length``, ``mlm``;
- :class:`BatchedSplits`: optional ``splits``, ``batch_size_for`` (contrastive);
- :class:`ExampleBatches`: ``example_batch``, ``split_dataset`` (distillation);
- :class:`SavedData`: what :func:`~lifecycle.artifacts.save_backbone` saves, by kind;
- :class:`BackboneLike`: ``out_features``; optional ``input_keys``, ``input_kind``,
  ``vocab_size``, ``max_length``, ``pretrained``, ``layer_groups``;
- :class:`SizedByBackbone`: a head the stage sizes (``in_features: null``).

What stages write: each declares ``outputs`` (:class:`StageOutput` by name: ``checkpoint``,
``backbone``, ``metrics``, ...); :func:`output_paths` gives their paths in a run folder, and
:data:`CLEANING_OUTPUTS` are what ``lifecycle clean`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lifecycle.errors import ConfigError


@dataclass(frozen=True)
class DataNeeds:
    """What a stage needs the data to be, decided before the DataModule builds its datasets.

    Attributes:
        mean: per-channel normalization mean the images must be given with (a pretrained image
            backbone's), or ``None`` for the data's own statistics.
        std: the matching per-channel standard deviation.
        normalization_source: where ``mean``/``std`` come from (a folder, a model name), for
            messages and ``transforms.json``.
        teacher_tokenizer: a distillation teacher's own tokenizer (an object, a folder or a
            packaged model's name) when it tokenizes differently from the data; training
            batches then carry ``teacher_input_ids`` / ``teacher_attention_mask``.
    """

    mean: list[float] | None = None
    std: list[float] | None = None
    normalization_source: str = ""
    teacher_tokenizer: Any = None

    @property
    def empty(self) -> bool:
        """Whether the stage needs nothing of the data beyond its own configuration."""
        return self.mean is None and self.teacher_tokenizer is None


@runtime_checkable
class DeclaresDataNeeds(Protocol):
    """A stage that needs the data in a particular form."""

    def data_needs(self) -> DataNeeds:
        """The needs, known from the stage's own construction (its backbone, its teacher):
        called before the DataModule's ``setup``, so it must not read the DataModule."""
        ...


@runtime_checkable
class AcceptsDataNeeds(Protocol):
    """A DataModule that can meet a stage's :class:`DataNeeds`."""

    def apply_data_needs(self, needs: DataNeeds) -> None:
        """Take ``needs`` into account when the datasets are built; called before they are
        (at the start of ``setup``, or before ``use_fold``)."""
        ...


def stage_data_needs(stage: Any) -> DataNeeds:
    """The :class:`DataNeeds` of ``stage`` (a LightningModule, or ``None``): empty when it
    declares none."""
    if isinstance(stage, DeclaresDataNeeds):
        return stage.data_needs()
    return DataNeeds()


def trainer_stage(datamodule: Any) -> Any:
    """The LightningModule of the Trainer ``datamodule`` is attached to, or ``None`` (a
    DataModule used without a Trainer, e.g. by ``lifecycle clean`` or a notebook)."""
    trainer = getattr(datamodule, "trainer", None)
    return getattr(trainer, "lightning_module", None) if trainer is not None else None


def check_data_needs_met(datamodule: Any, needs: DataNeeds, stage_name: str) -> None:
    """Refuse a DataModule that cannot meet non-empty ``needs`` (it has no
    ``apply_data_needs``): without it the stage would train on data in the wrong form.

    Raises:
        ConfigError: naming the missing method, what needs it, and the fix.
    """
    if needs.empty or datamodule is None or isinstance(datamodule, AcceptsDataNeeds):
        return
    wanted = []
    if needs.mean is not None:
        wanted.append(
            f"the normalization {needs.normalization_source or 'the backbone'} was trained with"
        )
    if needs.teacher_tokenizer is not None:
        wanted.append("the teacher's own tokenization of each training text")
    raise ConfigError(
        f"{stage_name} needs {' and '.join(wanted)}, but {type(datamodule).__name__} has no "
        "`apply_data_needs(needs)` method (see lifecycle.interfaces.AcceptsDataNeeds). Fix: "
        "use a lifecycle DataModule, or add `apply_data_needs` to yours."
    )


@runtime_checkable
class CleanableData(Protocol):
    """What ``lifecycle clean`` needs from a DataModule (images and texts implement it)."""

    def cleaning_records(self) -> Any:
        """Every training record (before the validation split) and the held-out test records,
        as :class:`~lifecycle.data.cleaning.records.CleaningRecords`; unreadable records are
        listed in it, not raised."""
        ...

    def use_fold(self, records: Any, train_idx: Any, val_idx: Any) -> None:
        """Serve ``records[train_idx]`` as the training split and ``records[val_idx]`` as the
        validation split (K-fold training of the cleaning stage)."""
        ...


def require(obj: Any, name: str, role: str, fix: str) -> Any:
    """``getattr(obj, name)``, or a :class:`ConfigError` naming the missing attribute.

    Args:
        obj: the DataModule or backbone read.
        name: the attribute.
        role: who needs it, for the message (e.g. ``"RegressionModule"``).
        fix: how to provide it.
    """
    if not hasattr(obj, name):
        raise ConfigError(
            f"{role} needs `{name}` from {type(obj).__name__}, which has none. Fix: {fix}."
        )
    return getattr(obj, name)


def optional(obj: Any, name: str, default: Any = None) -> Any:
    """``getattr(obj, name, default)`` for an attribute a protocol below lists as optional:
    the reads of every stage go through :func:`require` or here, so ``grep`` finds them all."""
    return getattr(obj, name, default) if obj is not None else default


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members (attributes and methods) of ``protocol`` that ``obj`` lacks, in order."""
    names = list(getattr(protocol, "__annotations__", {}))
    names += [
        n
        for n, v in vars(protocol).items()
        if callable(v) and not n.startswith("_") and n not in names
    ]
    return [n for n in names if not hasattr(obj, n)]


def require_protocol(obj: Any, protocol: type, role: str, fix: str) -> None:
    """Refuse ``obj`` (a DataModule or backbone) unless it has every member of ``protocol``.

    Raises:
        ConfigError: naming each missing member, the protocol, who needs it and ``fix``.
    """
    missing = missing_members(obj, protocol)
    if missing:
        names = ", ".join(f"`{n}`" for n in missing)
        raise ConfigError(
            f"{role} needs {names} from {type(obj).__name__}, which has none (see "
            f"lifecycle.interfaces.{protocol.__name__}). Fix: {fix}."
        )


# --------------------------------------------------------------------------- what stages read
# Each protocol lists the REQUIRED members as annotations (``require_protocol`` checks them);
# the optional ones are named in its docstring and read with :func:`optional`, each with the
# behaviour its absence gives.


class ClassificationData(Protocol):
    """What :class:`~lifecycle.stages.ClassificationModule` reads from its DataModule.

    Required:
        num_classes: how many classes the labels take (checked against the model's).

    Optional:
        class_names: one name per class, for the reports (default ``"0"``, ``"1"``, ...).
        unlabeled_count: training records without a label (``-1``); default 0. Only
            distillation learns from them.
    """

    num_classes: int


class RegressionData(Protocol):
    """What :class:`~lifecycle.stages.RegressionModule` reads from its DataModule.

    Required (with ``standardize_target: true``, the default):
        target_mean: the training split's mean target, once ``setup("fit")`` ran.
        target_std: its standard deviation (> 0).
    """

    target_mean: float
    target_std: float


class TokenizedData(Protocol):
    """What a stage with a text backbone reads from its DataModule.

    Required (for the language-model stages, which size their network from it, and for a
    backbone pretrained with its own tokenizer, which the data must use):
        tokenizer: a ``transformers`` tokenizer (``len``, ``get_vocab``, ``pad_token_id``).

    Optional:
        max_length: the longest row in tokens (checked against the backbone's positions).
        mlm: ``True`` when batches are masked (masked LM), ``False`` for causal LM.
    """

    tokenizer: Any


class BatchedSplits(Protocol):
    """What :class:`~lifecycle.stages.ContrastivePretrainingModule` reads to check that a
    batch can be filled. Optional, both: without them the check is skipped (with a log line).

    Optional:
        splits: ``{"train": dataset, ...}`` after ``setup``.
        batch_size_for(split): the batch size of ``split``.
    """


class ExampleBatches(Protocol):
    """What distillation reads to probe shapes and score a transfer set: a batch and the
    dataset of a split. Both methods are required where a stage declares it uses them."""

    def example_batch(self, split: str) -> dict:
        """One collated batch of ``split`` (``"train"``, ``"val"``, ...)."""
        ...

    def split_dataset(self, split: str) -> Any:
        """The Dataset of ``split``."""
        ...


class SavedData(Protocol):
    """What :func:`~lifecycle.artifacts.save_backbone` writes of the DataModule a backbone was
    pretrained on, by the folder's ``kind``:

    - ``"text"``: ``tokenizer`` (required: the folder must hold it), ``max_length`` (optional);
    - ``"image"``: ``state_dict()`` (required: the normalization and pipelines written as
      ``transforms.json``), ``input_shape`` (optional);
    - always, optional: ``hparams`` (the data's settings, recorded in the manifest).
    """


@runtime_checkable
class BackboneLike(Protocol):
    """What the stages read from a backbone.

    Required:
        out_features: the size of the features a head receives (when a stage builds or sizes
            the head; a given head with its own ``in_features`` needs it only to check).

    Optional:
        input_keys: the batch fields fed to it, in order (default ``("image",)``; the text
            backbones say ``("input_ids", "attention_mask")``).
        input_kind: what its saved folder is for, ``"image"``, ``"text"`` or ``"features"``
            (:func:`~lifecycle.artifacts.save_backbone`); default from ``input_keys``.
        vocab_size: embedding rows (the data's tokenizer must fit).
        max_length: positions (the data's rows must fit).
        pretrained: a :class:`~lifecycle.models.weights.PretrainedInfo`: the normalization
            or tokenizer it was pretrained with, which becomes the stage's
            :class:`DataNeeds` (or a tokenizer check).
        layer_groups(): bottom-to-top groups for the fine-tuning callbacks.
    """

    out_features: int


@runtime_checkable
class SizedByBackbone(Protocol):
    """A head whose input size is left unset (``in_features: null`` in YAML) until the stage
    gives it the backbone's ``out_features`` (:class:`~lifecycle.models.LinearHead` is one)."""

    in_features: int | None

    def size_to(self, in_features: int) -> None:
        """Build the layers that take ``in_features`` features."""
        ...


# --------------------------------------------------------------------------- stage outputs
@dataclass(frozen=True)
class StageOutput:
    """One thing a stage writes into its run folder, by name.

    Attributes:
        name: the name a pipeline refers to (``stage.outputs["backbone"]``).
        path: where it is, relative to the run folder (``runs/<run>/version_N``); a folder
            ends with ``/``; ``*`` stands for a part decided at run time (e.g. the epoch).
        description: what it holds.
        written_by: the subcommand after which it exists: ``fit``, ``test``, ``predict``,
            ``clean`` or ``tune``.
        kind: what it is, for a pipeline to check that an input fits the field it fills
            (see :mod:`lifecycle.pipeline.spec`): ``checkpoint``, ``backbone``, ``manifest``,
            ``config`` (a config file a later stage adds with ``--config``) or ``file``
            (anything else).
    """

    name: str
    path: str
    description: str
    written_by: str = "fit"
    kind: str = "file"


def outputs_of(stage_or_class: Any) -> dict[str, StageOutput]:
    """The ``outputs`` a stage (or its class) declares; empty when it declares none."""
    return dict(getattr(stage_or_class, "outputs", None) or {})


def output_paths(stage_or_class: Any, run_dir: str | Path) -> dict[str, Path]:
    """``{name: run_dir / path}`` of every declared output of ``stage_or_class``.

    A path with ``*`` is the newest match in ``run_dir`` when one exists, else the pattern.
    """
    run_dir = Path(run_dir)
    out = {}
    for name, output in outputs_of(stage_or_class).items():
        path = run_dir / output.path
        if "*" in output.path:
            found = sorted(run_dir.glob(output.path.rstrip("/")), key=lambda p: p.stat().st_mtime)
            path = found[-1] if found else path
        out[name] = path
    return out


def _outputs(*items: StageOutput) -> dict[str, StageOutput]:
    return {item.name: item for item in items}


# what a run of any stage under the ``lifecycle`` command writes
RUN_OUTPUTS = _outputs(
    StageOutput("config", "config.yaml", "the resolved configuration of the run"),
    StageOutput("log", "metrics.csv", "every logged metric by step and epoch (CSVLogger)"),
    StageOutput(
        "checkpoint",
        "checkpoints/last.ckpt",
        "the weights and state at the last epoch's end",
        kind="checkpoint",
    ),
    StageOutput(
        "best_checkpoint",
        "checkpoints/best-*.ckpt",
        "the checkpoint with the lowest val/loss",
        kind="checkpoint",
    ),
)
# what ``lifecycle test`` / ``predict`` add for a stage that evaluates (classification, ...)
EVALUATION_OUTPUTS = _outputs(
    StageOutput("metrics", "metrics.json", "the test metrics and the stage's details", "test"),
    StageOutput("predictions", "predictions.csv", "one row per predicted record", "predict"),
)
# what a pretraining stage adds (see lifecycle.artifacts)
PRETRAINED_OUTPUTS = _outputs(
    StageOutput(
        "backbone",
        "pretrained/",
        "the pretrained backbone folder that lifecycle.artifacts.load_backbone reads",
        kind="backbone",
    ),
    StageOutput(
        "backbone_manifest",
        "pretrained/lifecycle_pretrained.json",
        "the backbone folder's manifest: class, arguments, normalization or tokenizer, origin",
    ),
)
# what ``lifecycle clean`` writes into its output folder (lifecycle.data.cleaning.stage)
CLEANING_OUTPUTS = _outputs(
    StageOutput(
        "manifest", "manifest.csv", "the kept records, for `cleaned_manifest`", "clean", "manifest"
    ),
    StageOutput("removed", "removed.csv", "every removed or changed record and why", "clean"),
    StageOutput("findings", "findings.csv", "every finding, flags included", "clean"),
    StageOutput("report", "report.md", "the cleaning report (with its plots)", "clean"),
    StageOutput("report_summary", "report.json", "the cleaning report's figures", "clean"),
)


def figure_outputs(*names: str) -> dict[str, StageOutput]:
    """The ``<name>.png`` figures a stage's ``report_figures`` gives after ``test``."""
    return _outputs(
        *(
            StageOutput(n, f"{n}.png", f"the {n.replace('_', ' ')} figure of the test run", "test")
            for n in names
        )
    )
