"""The base of the text DataModules: reading, splitting without leakage, the tokenizer (trained
on the training split or loaded), the issue report and the tokenizer in checkpoints."""

from __future__ import annotations

import logging
from collections import Counter

from torch.utils.data import Dataset

from lifecycle.data.corpora import EncodingErrors, TextTable
from lifecycle.data.dedup import identical_text_groups, kept_record
from lifecycle.data.loading import SplitDataModule
from lifecycle.data.tokenization import (
    encode,
    load_tokenizer,
    tokenizer_from_state,
    tokenizer_state,
    train_tokenizer,
)
from lifecycle.data.validation import DataIssue, summarize_issues, write_issues

log = logging.getLogger(__name__)


class TextDataModule(SplitDataModule):
    """What the text DataModules share: reading, splitting without leakage, the tokenizer, the
    issue report. See :class:`~lifecycle.data.text.TextClassificationDataModule` for the
    arguments.

    Subclasses implement ``apply_data_needs`` (:class:`~lifecycle.interfaces.AcceptsDataNeeds`)
    and start their ``setup`` with ``self.apply_data_needs(stage_data_needs(trainer_stage(self)))``,
    before any dataset is encoded, so nothing is encoded twice.
    """

    def __init__(
        self,
        tokenizer: str,
        vocab_size: int,
        min_frequency: int,
        lowercase: bool,
        max_length: int,
        val_fraction: float,
        test_fraction: float,
        deduplicate: bool,
        encoding_errors: EncodingErrors,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int,
        seed: int,
    ):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if max_length < 4:
            raise ValueError(f"`max_length` must be at least 4 tokens, got {max_length}.")
        if num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0, got {num_workers}.")
        self.tokenizer_spec = tokenizer
        self.vocab_size = vocab_size
        self.min_frequency = min_frequency
        self.lowercase = lowercase
        self.max_length = max_length
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.deduplicate = deduplicate
        self.encoding_errors = encoding_errors
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.tokenizer = None
        self.texts: dict[str, TextTable] = {}
        self.issues: list[DataIssue] = []
        self.notes: list[str] = []
        self.truncated: dict[str, int] = {}

    # ----------------------------------------------------------------- shared steps
    def _record(self, table: TextTable) -> None:
        self.issues += table.issues
        self.notes += table.notes
        table.issues, table.notes = [], []

    def _groups(self, table: TextTable) -> list[list[int]]:
        """Rows grouped by identical text (:func:`~lifecycle.data.dedup.text_key`), in order of
        first appearance."""
        return identical_text_groups(table.texts)

    def _dedupe(self, table: TextTable) -> list[list[int]]:
        """Groups of identical texts; with ``deduplicate``, each group as its one kept record
        (:func:`~lifecycle.data.dedup.kept_record`: the first of the most common label; any
        record of unlabeled text is its group's first), every other copy listed with its reason.
        """
        groups = self._groups(table)
        if not self.deduplicate:
            return groups
        labels = table.labels if table.labels is not None else [None] * len(table)
        kept = []
        for rows in groups:
            if len(rows) == 1:  # a text without copies: kept, nothing to list
                kept.append([rows[0]])
                continue
            keep = kept_record(rows, labels)
            kept.append([keep])
            votes = Counter(labels[i] for i in rows)
            for i in rows:
                if i == keep:
                    continue
                detail = f"kept {table.sources[keep]}"
                if labels[i] == labels[keep]:
                    reason = "duplicate text"
                elif votes[labels[i]] == votes[labels[keep]]:
                    reason = "duplicate text, tied label"
                    detail += f"; label '{labels[i]}' tied with the kept '{labels[keep]}'"
                else:
                    reason = "duplicate text, outvoted label"
                    detail += f"; label '{labels[i]}' outvoted by '{labels[keep]}'"
                self.issues.append(DataIssue(table.sources[i], reason, "dropped", detail))
        return kept

    def _fit_tokenizer(self, train_texts: list[str]) -> None:
        if self.tokenizer_spec in ("wordpiece", "bpe"):
            self.tokenizer = train_tokenizer(
                train_texts,
                self.tokenizer_spec,
                self.vocab_size,
                self.min_frequency,
                self.lowercase,
                self.max_length,
            )
        else:
            self.tokenizer = load_tokenizer(self.tokenizer_spec)

    def _report(self) -> None:
        """Log what was left out, and save the issue list and tokenizer in the run folder."""
        for line in self.notes + summarize_issues(self.issues):
            log.warning(line)
        out = self._run_dir()
        if out is None:
            return
        self.tokenizer.save_pretrained(str(out / "tokenizer"))
        if self.issues:
            path = write_issues(self.issues, out / "data_issues.csv")
            log.warning(f"{len(self.issues)} records left out or changed are listed in {path}.")

    def _encode(self, name: str) -> list[list[int]]:
        ids, truncated = encode(self.tokenizer, self.texts[name].texts, self.max_length)
        self.truncated[name] = truncated
        if truncated:
            log.info(f"{truncated} {name} texts were cut to max_length={self.max_length} tokens.")
        return ids

    # ----------------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict:
        """The tokenizer's files, so a checkpoint carries the exact tokenization of its run."""
        return {"tokenizer": tokenizer_state(self.tokenizer)} if self.tokenizer is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Take the checkpoint's tokenizer (also into the run folder's ``tokenizer/``)."""
        if "tokenizer" in state_dict:
            self.tokenizer = tokenizer_from_state(state_dict["tokenizer"])
            self._datasets = {}  # encoded with the previous tokenizer; re-encode on next use
            out = self._run_dir()
            if out is not None:
                self.tokenizer.save_pretrained(str(out / "tokenizer"))

    def batch_size_for(self, name: str) -> int:
        return self.batch_size if name == "train" else (self.eval_batch_size or self.batch_size)

    def _dataset(self, name: str) -> Dataset:
        raise NotImplementedError

    def split_dataset(self, name: str) -> Dataset:
        if name not in self._datasets:  # encoded on first use
            self._datasets[name] = self._dataset(name)
        return self._datasets[name]
