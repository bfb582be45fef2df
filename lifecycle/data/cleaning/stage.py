"""The cleaning stage: validate, de-duplicate and find label issues, then write a manifest.

:class:`DataCleaner` holds the stage's settings (its ``__init__`` is the ``cleaning:`` section of
a clean recipe) and :meth:`DataCleaner.run` does the work on a DataModule's records:

1. records that cannot be read are left out (the DataModule lists them);
2. exact duplicates, then near duplicates, within the training records: one of each group is
   kept (the first), the others get the ``duplicates`` policy;
3. leakage: training records that copy (exactly or nearly) a test record get the ``leakage`` policy;
4. label issues: out-of-fold probabilities from ``folds``-fold training of the recipe's model
   (records dropped above are left out, so no copy of a record is in its own training folds),
   then confident learning; flagged records get the ``label_issues`` policy;
5. the run folder receives ``manifest.csv`` (every kept record, its label and weight),
   ``removed.csv`` (every removed or changed record and why), ``findings.csv`` (every finding,
   flags included), ``report.json``, ``report.md`` and its plots.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
from lightning.pytorch.utilities.rank_zero import rank_zero_only

import lifecycle.data.cleaning.duplicates as dup
from lifecycle.data.cleaning.kfold import out_of_fold_probabilities
from lifecycle.data.cleaning.label_issues import LabelIssues, find_label_issues
from lifecycle.data.cleaning.manifest import ManifestRow, write_manifest
from lifecycle.data.cleaning.records import CleaningRecords
from lifecycle.data.cleaning.report import write_report
from lifecycle.data.datasets import DataIssue
from lifecycle.data.dedup import kept_record
from lifecycle.data.splits import stratified_subset
from lifecycle.data.validation import write_issues
from lifecycle.errors import ConfigError
from lifecycle.interfaces import CLEANING_OUTPUTS, CleanableData, StageOutput

log = logging.getLogger(__name__)

CLEANABLE_METHODS = [
    name
    for name, value in vars(CleanableData).items()
    if not name.startswith("_") and callable(value)
]
"""The methods of :class:`~lifecycle.interfaces.CleanableData`, read from the protocol itself."""

DuplicatePolicy = Literal["drop", "flag"]
LabelPolicy = Literal["drop", "relabel", "downweight", "flag", "off"]


@dataclass
class Finding:
    """One thing found about one record.

    Attributes:
        index: the record's position in the cleaning records.
        source: its name.
        kind: ``exact duplicate``, ``near duplicate``, ``leakage`` or ``label issue``.
        action: ``dropped``, ``relabeled``, ``down-weighted`` or ``flagged``.
        detail: which record it copies, or the given and suggested label with the confidence.
        score: for label issues the given label's out-of-fold probability; for duplicates the
            similarity in [0, 1], 1 for an exact copy (images: the share of pixels that agree at
            the best alignment; texts: the Jaccard similarity of character 5-grams).
        suggested: for label issues, the suggested class.
        other: for duplicates, the kept record's index; for leakage, ``len(records) + j`` for
            test record ``j``.
    """

    index: int
    source: str
    kind: str
    action: str
    detail: str
    score: float | None = None
    suggested: str | None = None
    other: int | None = None


@dataclass
class CleaningResult:
    """What :meth:`DataCleaner.run` found and decided (see ``report.json`` for the summary)."""

    records: CleaningRecords
    findings: list[Finding]
    kept: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    probabilities: np.ndarray | None
    summary: dict[str, Any]
    out_dir: Path | None = None


_ACTION = {
    "drop": "dropped",
    "flag": "flagged",
    "relabel": "relabeled",
    "downweight": "down-weighted",
}


class DataCleaner:
    """Settings of the cleaning stage (the ``cleaning:`` section of a clean recipe).

    Args:
        folds: ``K`` of the K-fold training that gives every record out-of-fold probabilities
            (each fold trains the recipe's model with the recipe's ``trainer`` settings).
        label_issues: what to do with records whose label is likely wrong: ``drop``,
            ``relabel`` (to the confident label), ``downweight`` (loss weight
            ``downweight_to``), ``flag`` (report only) or ``off`` (no K-fold training).
        downweight_to: the loss weight of down-weighted records.
        max_self_confidence: act on a label issue only when the out-of-fold probability of its
            given label is at most this; the others are still listed, as ``flagged``. ``1.0``
            (the default) acts on every issue confident learning finds; a low cut such as
            ``0.05`` drops (or relabels) only the clearest mistakes and keeps hard but correct
            records, which confident learning also flags (see the README's cleaning benchmark).
        duplicates: ``drop`` or ``flag`` the second and later copies in a group of exact or
            near duplicates (the first is kept).
        leakage: ``drop`` or ``flag`` training records that copy a test record.
        near_duplicates: look for near duplicates (shifted or noised images; texts that differ
            in a few characters), not only exact ones.
        image_max_differing: share of pixels that may differ for two images to be near copies
            (see :func:`~lifecycle.data.cleaning.duplicates.near_duplicate_image_pairs`).
        image_max_shift: the largest shift in pixels between an image and its copy.
        text_similarity: the Jaccard similarity of character 5-grams above which two texts
            are near copies.
        probabilities: a previous run's ``out_of_fold_probabilities.npy`` to reuse instead of
            K-fold training, e.g. to try another ``label_issues`` policy or
            ``max_self_confidence`` in seconds; the data and the duplicate settings must be
            those of that run (checked: one row per record, none missing where needed).
        subset: clean only this many records (a stratified, seeded subset), e.g. for a quick
            look; the manifest then lists only records of the subset.
        seed: seed of the folds, the subset and the fold models.
        show: how many flagged records the report shows (image grids, text tables).
    """

    # what ``lifecycle clean`` writes into its run folder, by name (a pipeline's inputs)
    outputs: ClassVar[dict[str, StageOutput]] = CLEANING_OUTPUTS

    def __init__(
        self,
        folds: int = 5,
        label_issues: LabelPolicy = "drop",
        downweight_to: float = 0.2,
        max_self_confidence: float = 1.0,
        duplicates: DuplicatePolicy = "drop",
        leakage: DuplicatePolicy = "drop",
        near_duplicates: bool = True,
        image_max_differing: float = 0.015,
        image_max_shift: int = 3,
        text_similarity: float = 0.8,
        probabilities: str | None = None,
        subset: int | None = None,
        seed: int = 42,
        show: int = 24,
    ):
        for name, value, allowed in (
            ("label_issues", label_issues, ("drop", "relabel", "downweight", "flag", "off")),
            ("duplicates", duplicates, ("drop", "flag")),
            ("leakage", leakage, ("drop", "flag")),
        ):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {', '.join(allowed)}; got {value!r}.")
        if not 0.0 <= downweight_to <= 1.0:
            raise ValueError(f"`downweight_to` must be in [0, 1], got {downweight_to}.")
        if not 0.0 <= max_self_confidence <= 1.0:
            raise ValueError(
                f"`max_self_confidence` must be in [0, 1] (a probability), got {max_self_confidence}."
            )
        if not 0.0 < text_similarity <= 1.0:
            raise ValueError(f"`text_similarity` must be in (0, 1], got {text_similarity}.")
        self.folds = folds
        self.label_issues = label_issues
        self.downweight_to = downweight_to
        self.max_self_confidence = max_self_confidence
        self.duplicates = duplicates
        self.leakage = leakage
        self.near_duplicates = near_duplicates
        self.image_max_differing = image_max_differing
        self.image_max_shift = image_max_shift
        self.text_similarity = text_similarity
        self.probabilities = probabilities
        self.subset = subset
        self.seed = seed
        self.show = show

    # ----------------------------------------------------------------- duplicates
    def _near_pairs(self, kind: str, items) -> list[tuple[int, int, float]]:
        """Near-duplicate pairs ``(i, j, similarity)``, similarity in [0, 1] with 1 for identical:
        for images the share of pixels that agree, for texts the Jaccard similarity."""
        if kind == "image":
            pairs = dup.near_duplicate_image_pairs(
                items, self.image_max_differing, self.image_max_shift
            )
            return [(a, b, 1.0 - differing) for a, b, differing in pairs]
        return dup.near_duplicate_text_pairs(items, self.text_similarity)

    def find_duplicates(self, records: CleaningRecords) -> list[Finding]:
        """Exact and near duplicates among the records, and copies of test records (leakage)."""
        findings: list[Finding] = []
        n = len(records)
        items = records.items
        has_test = records.test_items is not None and len(records.test_items) > 0
        if has_test:
            items = (
                np.concatenate([records.items, records.test_items])
                if records.kind == "image"
                else list(records.items) + list(records.test_items)
            )
        name = lambda i: records.sources[i] if i < n else records.test_sources[i - n]  # noqa: E731
        exact = dup.exact_duplicates(items)
        exact_group = {i: g[0] for g in exact for i in g}  # each exact copy -> its group's first
        near_pairs = self._near_pairs(records.kind, items) if self.near_duplicates else []
        groups = dup.groups_from_pairs(
            len(items),
            [(g[0], j) for g in exact for j in g[1:]] + [(a, b) for a, b, _ in near_pairs],
        )
        similarity = {(a, b): s for a, b, s in near_pairs}
        for group in groups:
            tests = [i for i in group if i >= n]
            train = [i for i in group if i < n]
            if tests:
                for i in train:
                    findings.append(
                        Finding(i, name(i), "leakage", _ACTION[self.leakage],
                                f"copies test record {name(tests[0])}", other=tests[0])
                    )  # fmt: skip
                continue
            keep = kept_record(train, records.labels)
            for i in (i for i in train if i != keep):
                exact_copy = i in exact_group and exact_group[i] == exact_group.get(keep)
                score = 1.0 if exact_copy else similarity.get((min(keep, i), max(keep, i)))
                label_note = (
                    ""
                    if records.labels[i] == records.labels[keep]
                    else f" (label {records.class_names[records.labels[i]]}, kept record's "
                    f"{records.class_names[records.labels[keep]]})"
                )
                findings.append(
                    Finding(i, name(i), "exact duplicate" if exact_copy else "near duplicate",
                            _ACTION[self.duplicates], f"copy of {name(keep)}{label_note}", score,
                            other=keep)
                )  # fmt: skip
        return findings

    # ----------------------------------------------------------------- label issues
    def find_label_issues(
        self,
        records: CleaningRecords,
        model: L.LightningModule,
        datamodule: L.LightningDataModule,
        trainer_kwargs: dict[str, Any] | None,
    ) -> tuple[list[Finding], np.ndarray, Any]:
        """Out-of-fold probabilities by K-fold training, then confident learning."""
        probs = out_of_fold_probabilities(
            model, datamodule, records, self.folds, self.seed, trainer_kwargs,
            on_fold=lambda k, n: log.warning(f"Label issues: training fold {k + 1} of {n}"),
        )  # fmt: skip
        findings, issues = self.label_findings(records, probs)
        return findings, probs, issues

    def _load_probabilities(self, n_records: int, n_classes: int) -> np.ndarray:
        """``self.probabilities``, checked against the records before any slow work."""
        path = Path(self.probabilities)
        if not path.is_file():
            raise FileNotFoundError(
                f"`probabilities`: {path} does not exist. Fix: give the "
                "`out_of_fold_probabilities.npy` of an earlier `lifecycle clean` run, or leave "
                "`probabilities` unset to train the folds."
            )
        probs = np.load(path)
        if probs.shape != (n_records, n_classes):
            raise ValueError(
                f"`probabilities`: {path} holds {probs.shape} but this data has {n_records} "
                f"records of {n_classes} classes. Fix: use the same data (and `subset`) as the "
                "run that wrote it, or leave `probabilities` unset to train the folds."
            )
        return probs

    def _saved_rows(self, probs: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """The saved probabilities of the records ``rest``, which must all have some."""
        rows = probs[rest]
        if np.isnan(rows).any():
            missing = int(np.isnan(rows[:, 0]).sum())
            raise ValueError(
                f"`probabilities`: {self.probabilities} has no probabilities for {missing} records "
                "this run keeps (that run dropped them as duplicates). Fix: use that run's "
                "`duplicates`, `leakage` and `near_duplicates` settings, or leave `probabilities` "
                "unset."
            )
        return rows

    def label_findings(
        self, records: CleaningRecords, probs: np.ndarray
    ) -> tuple[list[Finding], LabelIssues]:
        """Confident learning on out-of-fold ``probs`` (N, K): one finding per label issue, most
        likely wrong first, with the ``label_issues`` action where the given label's probability
        is at most ``max_self_confidence`` and ``flagged`` elsewhere."""
        issues = find_label_issues(records.labels, probs)
        findings = []
        names = records.class_names
        for i in issues.indices:
            given, suggested = names[records.labels[i]], names[issues.suggested[i]]
            act = issues.self_confidence[i] <= self.max_self_confidence
            findings.append(
                Finding(
                    int(i), records.sources[i], "label issue",
                    _ACTION[self.label_issues] if act else "flagged",
                    f"labeled {given}, likely {suggested} (p={probs[i, issues.suggested[i]]:.2f}"
                    f" vs {issues.self_confidence[i]:.2f})",
                    float(issues.self_confidence[i]), suggested,
                )
            )  # fmt: skip
        return findings, issues

    # ----------------------------------------------------------------- the stage
    def run(
        self,
        datamodule: L.LightningDataModule,
        model: L.LightningModule | None = None,
        trainer_kwargs: dict[str, Any] | None = None,
        out_dir: str | Path | None = None,
    ) -> CleaningResult:
        """Clean ``datamodule``'s records and, with ``out_dir``, write the manifest and report.

        Args:
            datamodule: a :class:`~lifecycle.interfaces.CleanableData` DataModule:
                ``cleaning_records()``, and ``use_fold()`` when folds are trained (``label_issues``
                not ``off`` and no saved ``probabilities``).
            model: the untrained model K-fold training copies (needed unless
                ``label_issues: off``).
            trainer_kwargs: each fold's ``lightning.Trainer`` arguments.
            out_dir: the run folder; under a multi-process strategy only global rank 0 writes
                into it (every rank computes the same result).

        Raises:
            ConfigError: the DataModule lacks a method of
                :class:`~lifecycle.interfaces.CleanableData` that this run needs.
        """
        self.check_cleanable(datamodule)
        if self.label_issues != "off" and model is None and self.probabilities is None:
            raise ValueError(
                "Finding label issues trains a model: give `model`, or `probabilities` from an "
                "earlier run, or set `label_issues: off`."
            )
        records = datamodule.cleaning_records()
        if self.subset is not None:
            records = records.take(stratified_subset(records.labels, self.subset, self.seed))
        log.warning(
            f"Cleaning {len(records)} {records.kind} records"
            + (
                f" (+ {len(records.test_items)} test records for leakage)"
                if records.test_items is not None
                else ""
            )
            + (f"; {records.unreadable} unreadable ones left out" if records.unreadable else "")
        )
        saved = None
        if self.label_issues != "off" and self.probabilities is not None:
            saved = self._load_probabilities(len(records), len(records.class_names))
        findings = self.find_duplicates(records)
        dropped = {f.index for f in findings if f.action == "dropped"}
        probs = issues = None
        if self.label_issues != "off":
            rest = np.array([i for i in range(len(records)) if i not in dropped], dtype=np.int64)
            if saved is not None:
                rest_probs = self._saved_rows(saved, rest)
                label_findings, issues = self.label_findings(records.take(rest), rest_probs)
            else:
                label_findings, rest_probs, issues = self.find_label_issues(
                    records.take(rest), model, datamodule, trainer_kwargs
                )
            probs = np.full((len(records), len(records.class_names)), np.nan, dtype=np.float32)
            probs[rest] = rest_probs
            for f in label_findings:
                f.index = int(rest[f.index])
            findings += label_findings
        labels = records.labels.copy()
        weights = np.ones(len(records), dtype=np.float32)
        index_of = {name: i for i, name in enumerate(records.class_names)}
        for f in findings:
            if f.action == "dropped":
                dropped.add(f.index)
            elif f.action == "relabeled":
                labels[f.index] = index_of[f.suggested]
            elif f.action == "down-weighted":
                weights[f.index] = self.downweight_to
        kept = np.array([i for i in range(len(records)) if i not in dropped], dtype=np.int64)
        summary = self._summary(records, findings, kept, labels, issues, probs)
        result = CleaningResult(records, findings, kept, labels, weights, probs, summary)
        if out_dir is not None:
            if rank_zero_only.rank == 0:  # the other ranks of a DDP run hold the same result
                self.write(result, Path(out_dir))
            else:
                result.out_dir = Path(out_dir)
        return result

    def check_cleanable(self, datamodule: Any) -> None:
        """Refuse, before any slow work, a DataModule without the
        :class:`~lifecycle.interfaces.CleanableData` methods this run calls (``use_fold`` is
        only called when folds are trained).

        Raises:
            ConfigError: naming each missing method and the fix.
        """
        trains_folds = self.label_issues != "off" and self.probabilities is None
        needed = [name for name in CLEANABLE_METHODS if name == "cleaning_records" or trains_folds]
        missing = [name for name in needed if not callable(getattr(datamodule, name, None))]
        if missing:
            listed = " and ".join(f"`{name}()`" for name in missing)
            why = " (`use_fold` trains the folds that find label issues)" if trains_folds else ""
            instead = ", or set `cleaning.label_issues: off`" if missing == ["use_fold"] else ""
            raise ConfigError(
                f"`data`: {type(datamodule).__name__} cannot be cleaned: it lacks {listed} of "
                f"lifecycle.interfaces.CleanableData{why}. Fix: use "
                "ImageClassificationDataModule or TextClassificationDataModule, or add the "
                f"methods to your DataModule{instead}."
            )

    def _summary(self, records, findings, kept, labels, issues, probs) -> dict[str, Any]:
        names = records.class_names
        before = Counter(names[y] for y in records.labels)
        after = Counter(names[labels[i]] for i in kept)
        counts = Counter((f.kind, f.action) for f in findings)
        summary: dict[str, Any] = {
            "records": len(records),
            "kept": len(kept),
            "unreadable": records.unreadable,
            "changed_while_reading": len(records.issues) - records.unreadable,
            "findings": {f"{k} ({a})": v for (k, a), v in sorted(counts.items())},
            "class_counts_before": {c: before.get(c, 0) for c in names},
            "class_counts_after": {c: after.get(c, 0) for c in names},
            "imbalance_before": round(
                max(before.values()) / max(min(before.get(c, 0) for c in names), 1), 2
            ),
            "imbalance_after": round(
                max(after.values(), default=0) / max(min(after.get(c, 0) for c in names), 1), 2
            ),
            "settings": dict(vars(self)),
        }
        if issues is not None:
            valid = ~np.isnan(probs[:, 0])
            summary["estimated_noise_rate"] = round(issues.noise_rate, 4)
            summary["out_of_fold_accuracy"] = round(
                float((probs[valid].argmax(1) == records.labels[valid]).mean()), 4
            )
        return summary

    # ----------------------------------------------------------------- output
    def write(self, result: CleaningResult, out_dir: Path) -> None:
        """Write the manifest, ``removed.csv``, ``findings.csv`` and the report into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        records = result.records
        names = records.class_names
        rows = [
            ManifestRow(records.sources[i], names[result.labels[i]], float(result.weights[i]),
                        names[records.labels[i]])
            for i in result.kept
        ]  # fmt: skip
        write_manifest(rows, out_dir / "manifest.csv")
        changed = [
            DataIssue(f.source, f.kind, f.action, f.detail)
            for f in result.findings
            if f.action != "flagged"
        ]
        write_issues(records.issues + changed, out_dir / "removed.csv")
        with open(out_dir / "findings.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["source", "kind", "action", "detail", "score", "suggested"])
            for item in records.issues:
                writer.writerow([item.source, item.reason, item.action, item.detail, "", ""])
            for item in result.findings:
                writer.writerow([item.source, item.kind, item.action, item.detail,
                                 "" if item.score is None else f"{item.score:.4f}", item.suggested or ""])  # fmt: skip
        if result.probabilities is not None:
            np.save(out_dir / "out_of_fold_probabilities.npy", result.probabilities)
        (out_dir / "report.json").write_text(json.dumps(result.summary, indent=2) + "\n")
        write_report(result, out_dir)
        result.out_dir = out_dir
        log.warning(
            f"Kept {len(result.kept)} of {len(records)} records; wrote {out_dir / 'manifest.csv'} "
            f"(train with `cleaned_manifest: {out_dir / 'manifest.csv'}`) and {out_dir / 'report.md'}."
        )
