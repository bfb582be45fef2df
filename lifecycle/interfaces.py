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
built once and never rebuilt by the stage.
"""

from __future__ import annotations

from dataclasses import dataclass
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
