"""Text DataModules: ``TextClassificationDataModule`` for labelled texts and ``CorpusDataModule``
for language-model pretraining on unlabeled text.

Both read a built-in dataset or the user's file (:mod:`lifecycle.data.corpora`), put identical
texts into one split only, train a tokenizer on the training split (or load one from a
folder), and pad each batch to its longest text. Records left out are counted, logged and
written with their reasons to ``data_issues.csv`` in the run folder; the tokenizer is saved
beside it (``tokenizer/``) and in every checkpoint, so ``test``/``predict`` from a checkpoint
tokenize exactly as training did.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lifecycle.data.augment import TokenAugment
from lifecycle.data.corpora import EncodingErrors, TextTable, load_text_dataset, read_text_file
from lifecycle.data.datasets import DataValidationError
from lifecycle.data.loading import SplitDataModule
from lifecycle.data.splits import UNLABELED, labeled_and_rest, split_indices
from lifecycle.data.tokenization import (
    encode,
    load_tokenizer,
    tokenizer_from_state,
    tokenizer_state,
    train_tokenizer,
)
from lifecycle.data.validation import DataIssue, summarize_issues, write_issues

log = logging.getLogger(__name__)


def standard_text(text: str) -> str:
    """Unicode NFKC, runs of whitespace as one space, trimmed (``normalize_text``)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def text_key(text: str) -> str:
    """What makes two texts "identical" for splitting and de-duplication: NFKC, case and
    runs of whitespace ignored."""
    return standard_text(text).casefold()


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids padded to the longest: ``(ids, attention_mask)``, both long (B, L)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[j, : len(row)] = 1
    return ids, mask


class TextDataset(Dataset):
    """Token ids (and labels) as dict samples; ``__getitems__`` pads a batch to its longest text.

    Batches: ``{"input_ids": long (B, L), "attention_mask": long (B, L), "index": long (B,)[,
    "label": long (B,)]}`` (``index``: each text's row in its split). With ``teacher_ids`` (the
    same texts in a distillation teacher's own tokenization) batches also hold
    ``teacher_input_ids`` and ``teacher_attention_mask``.
    With ``augment`` (a :class:`~lifecycle.data.augment.TokenAugment`), indices are
    ``(epoch, i)`` pairs and text ``i`` is augmented with a generator seeded from
    ``(seed, epoch, i)``: the same on every run and with any number of workers.
    """

    def __init__(
        self,
        ids: list[list[int]],
        labels: np.ndarray | None,
        pad_id: int,
        augment: TokenAugment | None = None,
        seed: int = 0,
        weights: list[float] | None = None,
        teacher_ids: list[list[int]] | None = None,
        teacher_pad_id: int = 0,
    ):
        if augment and teacher_ids is not None:
            raise ValueError(
                "Token augmentation (`augment_mask`/`augment_delete`/`augment_swap`) edits one "
                "tokenizer's ids, so a teacher with its own tokenizer could not see the same "
                "augmented text as the student. Fix: set the augment_* probabilities to 0 for "
                "distillation, or give the student the teacher's tokenizer."
            )
        self.teacher_ids = teacher_ids
        self.teacher_pad_id = teacher_pad_id
        self.ids = ids
        self.labels = torch.as_tensor(labels, dtype=torch.long) if labels is not None else None
        self.weights = (
            torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
        )
        self.pad_id = pad_id
        self.augment = augment if augment else None
        self.seed = seed
        self.epoch_indexed = self.augment is not None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([i]).items()}

    def row(self, i: int, epoch: int = 0) -> list[int]:
        """Text ``i``'s token ids as seen in ``epoch`` (augmented when there is ``augment``)."""
        if self.augment is None:
            return self.ids[i]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, i]))
        return self.augment(self.ids[i], rng)

    def __getitems__(self, indices: list) -> dict[str, torch.Tensor]:
        pairs = [i if isinstance(i, tuple) else (0, i) for i in indices]
        indices = [i for _, i in pairs]
        input_ids, mask = pad_rows([self.row(i, epoch) for epoch, i in pairs], self.pad_id)
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": mask, "index": index}
        if self.teacher_ids is not None:
            teacher_ids, teacher_mask = pad_rows(
                [self.teacher_ids[i] for i in indices], self.teacher_pad_id
            )
            batch["teacher_input_ids"], batch["teacher_attention_mask"] = teacher_ids, teacher_mask
        if self.labels is not None:
            batch["label"] = self.labels[index]
        if self.weights is not None:
            batch["weight"] = self.weights[index]
        return batch


class TextDataModule(SplitDataModule):
    """What the text DataModules share: reading, splitting without leakage, the tokenizer, the
    issue report. See :class:`TextClassificationDataModule` for the arguments."""

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
        """Rows grouped by identical text (:func:`text_key`), in order of first appearance."""
        groups: dict[str, list[int]] = {}
        for i, text in enumerate(table.texts):
            groups.setdefault(text_key(text), []).append(i)
        return list(groups.values())

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


class TextClassificationDataModule(TextDataModule):
    """Labelled texts: a built-in dataset or the user's CSV/JSONL, split, tokenized, batched.

    Batches are ``{"input_ids": long (B, L), "attention_mask": long (B, L), "label": long (B,)}``,
    padded to the batch's longest text.

    Splits are seeded and stratified by label, and identical texts (ignoring case and spacing)
    never land in two splits. With ``deduplicate`` each such group keeps one record, with the
    majority label; a group whose labels tie is dropped. Every record left out is listed with
    its reason in ``data_issues.csv``.

    Args:
        dataset: a built-in name (``tweets-sentiment``, ``tweets-sentiment-binary``,
            ``fortunes``) or a ``.csv``/``.tsv``/``.jsonl`` file.
        text_column: the file's text column (CSV) or key (JSONL).
        label_column: the file's label column or key; labels may be any strings.
        test_dataset: a second labelled file used as the test split (``test_fraction`` is then
            unused); a training text identical to a test text is left out of training.
        classes: keep only records with these labels, in this order (the model's class order);
            others are left out and listed. ``None`` keeps all: the dataset's own order for
            built-ins, sorted label strings for files.
        data_dir: where a built-in dataset's files are, when not in the default places.
        tokenizer: ``"bpe"`` (byte-level BPE) or ``"wordpiece"`` to train one on the training
            split, or a folder holding a Hugging Face tokenizer (e.g. a previous run's
            ``tokenizer/``). BPE training is reproducible; WordPiece training in ``tokenizers``
            0.23 is not (ties are broken in hash-map order, huggingface/tokenizers#1794), so two
            runs may learn slightly different vocabularies. Either way the run keeps its own.
        vocab_size: the trained tokenizer's largest vocabulary; the backbone's ``vocab_size``
            must be at least the tokenizer's size.
        min_frequency: how often a token must occur to enter a trained vocabulary.
        lowercase: lowercase before a trained tokenizer splits text.
        max_length: tokens per text, special tokens included; longer texts are cut (counted).
        val_fraction: share of the training records held out for validation.
        test_fraction: share held out for testing when there is no ``test_dataset``.
        train_subset: use only this many training records (stratified, seeded); ``None`` all.
        unlabeled_rest: with ``train_subset``, keep the other training records too, with their
            labels hidden (label ``-1``): the unlabeled transfer set that a
            :class:`~lifecycle.stages.distillation.DistillationModule`'s teacher scores. Stages
            that need every label refuse such data.
        deduplicate: keep one record per identical text (see above); ``False`` keeps every
            copy, all in the same split.
        unseen_labels: what to do with validation/test records whose label the training split
            lacks: ``"error"`` or ``"drop"`` (listed).
        encoding_errors: records with bytes that are not UTF-8: ``"replace"`` (U+FFFD; counted),
            ``"drop"`` (listed) or ``"error"``.
        augment_mask: training-time augmentation: probability of replacing each token by the
            mask token (``[MASK]``; the unknown token where there is none).
        augment_delete: probability of deleting each training token.
        augment_swap: probability of swapping each training token with the next one. All three
            are seeded from (``seed``, epoch, text) and never touch ``[CLS]``/``[SEP]``.
        batch_size: texts per training batch.
        eval_batch_size: texts per batch for validation, test and predict (default ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: seed of the splits and subsets.
        predict_path: a file of new texts for ``predict``: ``.txt`` (one per line) or ``.csv`` /
            ``.jsonl`` with ``text_column``. ``None`` predicts on the test split.
        cleaned_manifest: a ``manifest.csv`` written by ``lifecycle clean``: only its records
            of ``dataset`` are used, with its labels, and its weights scale each record's
            training loss. ``test_dataset`` is left as it is.
        normalize_text: standardize every text as read: Unicode NFKC (full-width letters,
            ligatures and compatibility forms to their plain equivalents) and runs of
            whitespace as one space, trimmed; the number changed is logged. Lower-casing is the
            tokenizer's ``lowercase``.
    """

    def __init__(
        self,
        dataset: str = "tweets-sentiment",
        text_column: str = "text",
        label_column: str = "label",
        test_dataset: str | None = None,
        classes: list[str] | None = None,
        data_dir: str | None = None,
        tokenizer: str = "bpe",
        vocab_size: int = 8000,
        min_frequency: int = 2,
        lowercase: bool = True,
        max_length: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        train_subset: int | None = None,
        unlabeled_rest: bool = False,
        deduplicate: bool = True,
        unseen_labels: Literal["error", "drop"] = "error",
        encoding_errors: EncodingErrors = "replace",
        augment_mask: float = 0.0,
        augment_delete: float = 0.0,
        augment_swap: float = 0.0,
        batch_size: int = 64,
        eval_batch_size: int | None = 256,
        num_workers: int = 0,
        seed: int = 42,
        predict_path: str | None = None,
        cleaned_manifest: str | None = None,
        normalize_text: bool = False,
    ):
        super().__init__(
            tokenizer,
            vocab_size,
            min_frequency,
            lowercase,
            max_length,
            val_fraction,
            test_fraction,
            deduplicate,
            encoding_errors,
            batch_size,
            eval_batch_size,
            num_workers,
            seed,
        )
        if unseen_labels not in ("error", "drop"):
            raise ValueError(f"`unseen_labels` must be 'error' or 'drop', got {unseen_labels!r}.")
        self.save_hyperparameters()
        self.dataset = dataset
        self.text_column = text_column
        self.label_column = label_column
        self.test_dataset = test_dataset
        self.classes = classes
        self.data_dir = data_dir
        if unlabeled_rest and train_subset is None:
            raise ValueError(
                "`unlabeled_rest: true` hides the labels of the records outside `train_subset`, "
                "but `train_subset` is not set. Fix: set `train_subset` to the number of labeled "
                "records to keep."
            )
        self.train_subset = train_subset
        self.unlabeled_rest = unlabeled_rest
        self.unlabeled_count = 0
        self.teacher_tokenizer = None
        self.unseen_labels = unseen_labels
        self.augment_probs = (augment_mask, augment_delete, augment_swap)
        TokenAugment(*self.augment_probs, mask_id=0, special_ids=set())  # checks the ranges
        self.predict_path = predict_path
        self.cleaned_manifest = cleaned_manifest
        self.normalize_text = normalize_text
        self.class_names: list[str] | None = None
        self.num_classes: int | None = None

    def _held_out_test(
        self, table: TextTable, order: np.random.Generator
    ) -> tuple[TextTable, TextTable]:
        """``(rest, test)``: the test split held out of the original records of ``dataset``
        (seeded, stratified, in a seeded random order) before any cleaning, and every record
        whose text is not in it. Copies of a test text that de-duplication leaves out are
        listed; the rest's duplicates are listed when the rest is de-duplicated."""
        before = len(self.issues)
        groups = self._dedupe(table)
        found, self.issues = self.issues[before:], self.issues[:before]
        labels = [table.labels[g[0]] for g in groups]
        names = sorted(set(labels))
        codes = np.array([names.index(label) for label in labels])
        _, held = split_indices(len(groups), self.test_fraction, self.seed, codes, "test")
        rows = sorted(r for i in held for r in groups[i])
        keys = {text_key(table.texts[r]) for r in rows}
        in_test = [text_key(t) in keys for t in table.texts]
        test_sources = {s for s, inside in zip(table.sources, in_test, strict=True) if inside}
        self.issues += [issue for issue in found if issue.source in test_sources]
        rest = table.keep([i for i, inside in enumerate(in_test) if not inside])
        return rest, table.keep(order.permutation(rows).tolist())

    def _apply_manifest(self, table: TextTable, test: TextTable | None = None) -> TextTable:
        """The manifest's records, labels and weights for ``table``; ``test`` stays as it is
        (a manifest's rows that name test records are ignored, with a warning)."""
        from lifecycle.data.cleaning.manifest import apply_manifest, manifest_for_training

        test_sources = set(test.sources) if test is not None else set()
        manifest = manifest_for_training(
            self.cleaned_manifest, table.sources, test_sources, self.dataset
        )
        names = list(
            self.classes
            or table.class_names
            or sorted(set(table.labels) | {row.label for row in manifest.values()})
        )
        kept, labels, weights = apply_manifest(
            table.sources, names, manifest, self.dataset, self.cleaned_manifest
        )
        cleaned = table.keep(kept.tolist())
        relabeled = sum(names[c] != cleaned.labels[j] for j, c in enumerate(labels))
        cleaned.labels = [names[c] for c in labels]
        cleaned.weights = weights.tolist()
        cleaned.class_names = names
        log.warning(
            f"{self.dataset}: the cleaned manifest keeps {len(kept)} of {len(table)} records "
            f"({relabeled} relabeled, {int((weights != 1).sum())} re-weighted); the test "
            "records are left as they are."
        )
        return cleaned

    # ----------------------------------------------------------------- cleaning stage
    def cleaning_records(self):
        """Every readable labelled record of ``dataset`` (before de-duplication and the
        validation split) and the test records, for ``lifecycle clean``; records that could not
        be used (undecodable, empty) are listed with their reason. The test records are the
        ``test_dataset``'s, or those :meth:`setup` holds out of the original ``dataset``: cleaning
        never changes them (it only checks the training records for copies of them)."""
        from lifecycle.data.cleaning.records import CleaningRecords

        table = self._load(self.dataset)
        names = list(self.classes or table.class_names or sorted(set(table.labels)))
        index = {name: i for i, name in enumerate(names)}
        if self.test_dataset is not None:
            test = self._load(self.test_dataset)
        else:
            table, test = self._held_out_test(table, np.random.default_rng(self.seed))
        self.class_names, self.num_classes = names, len(names)
        return CleaningRecords(
            "text", list(table.texts), np.array([index[x] for x in table.labels], dtype=np.int64),
            list(table.sources), names,
            list(test.texts) if test is not None else None,
            list(test.sources) if test is not None else None,
            list(self.issues),
        )  # fmt: skip

    def use_fold(self, records, train_idx: np.ndarray, val_idx: np.ndarray) -> None:
        """Serve ``records[train_idx]`` for training and ``records[val_idx]`` for validation
        (K-fold training in the cleaning stage). The tokenizer is trained once, on all the
        records' texts (no labels involved), and reused by every fold."""
        names = list(records.class_names)

        def table(idx) -> TextTable:
            return TextTable(
                self.dataset, [records.items[i] for i in idx],
                [names[records.labels[i]] for i in idx], [records.sources[i] for i in idx], names,
            )  # fmt: skip

        if self.tokenizer is None:
            self._fit_tokenizer(list(records.items))
        self.texts = {"train": table(train_idx), "val": table(val_idx)}
        self.class_names, self.num_classes = names, len(names)
        self._datasets = {}

    def _normalize(self, table: TextTable) -> TextTable:
        """NFKC and whitespace runs as one space, trimmed; the changed records are counted."""
        texts = [standard_text(t) for t in table.texts]
        changed = sum(a != b for a, b in zip(texts, table.texts, strict=True))
        if changed:
            self.notes.append(
                f"{table.name}: {changed} of {len(texts)} texts standardized (NFKC, whitespace)."
            )
        table.texts = texts
        return table

    def _load(self, dataset: str) -> TextTable:
        table = load_text_dataset(
            dataset, self.data_dir, self.text_column, self.label_column, self.encoding_errors
        )
        self._record(table)
        if self.normalize_text:
            table = self._normalize(table)
        if self.classes is not None:
            wanted = set(self.classes)
            rows = [i for i, label in enumerate(table.labels) if label in wanted]
            self.issues += [
                DataIssue(table.sources[i], "label not in `classes`", "dropped", label)
                for i, label in enumerate(table.labels)
                if label not in wanted
            ]
            table = table.keep(rows)
        if not len(table):
            raise DataValidationError(
                f"{dataset} has no usable labelled texts"
                + (f" with labels {self.classes}" if self.classes else "")
                + ". "
                + " ".join(summarize_issues(self.issues)[:3])
            )
        return table

    def _dedupe(self, table: TextTable) -> list[list[int]]:
        """Groups of identical texts; with ``deduplicate``, one row per group (majority label)."""
        groups = self._groups(table)
        if not self.deduplicate:
            return groups
        kept = []
        for rows in groups:
            if len(rows) == 1:
                kept.append(rows)
                continue
            votes = Counter(table.labels[i] for i in rows).most_common()
            if len(votes) > 1 and votes[0][1] == votes[1][1]:
                labels = ", ".join(sorted(label for label, _ in votes))
                self.issues += [
                    DataIssue(
                        table.sources[i], "identical texts with tied labels", "dropped", labels
                    )
                    for i in rows
                ]
                continue
            label = votes[0][0]
            keep = next(i for i in rows if table.labels[i] == label)
            kept.append([keep])
            for i in rows:
                if i == keep:
                    continue
                detail = f"kept {table.sources[keep]}"
                if table.labels[i] == label:
                    self.issues.append(
                        DataIssue(table.sources[i], "duplicate text", "dropped", detail)
                    )
                else:
                    detail += f"; label '{table.labels[i]}' outvoted by '{label}'"
                    self.issues.append(
                        DataIssue(
                            table.sources[i], "duplicate text, outvoted label", "dropped", detail
                        )
                    )
        return kept

    def setup(self, stage: str | None = None) -> None:
        if self.texts:
            return
        table = self._load(self.dataset)
        # held-out splits in a seeded random order: files are often sorted by label, and
        # single-class evaluation batches make per-batch metrics (and their warnings) odd
        order = np.random.default_rng(self.seed)
        if self.test_dataset is not None:
            test = self._load(self.test_dataset)
            if self.deduplicate:
                test = test.keep([g[0] for g in self._dedupe(test)])
        else:
            # from the original records, before a manifest changes anything
            table, test = self._held_out_test(table, order)
        if self.cleaned_manifest is not None:
            table = self._apply_manifest(table, test)
        groups = self._dedupe(table)
        group_labels = [table.labels[g[0]] for g in groups]
        names = sorted(set(group_labels))
        codes = np.array([names.index(label) for label in group_labels])
        pool = np.arange(len(groups))

        def rows(group_ids, shuffle: bool = False) -> list[int]:
            found = sorted(r for i in group_ids for r in groups[i])
            return order.permutation(found).tolist() if shuffle else found

        if self.test_dataset is not None:
            test_keys = {text_key(t) for t in test.texts}
            clash = np.array([text_key(table.texts[g[0]]) in test_keys for g in groups], bool)
            self.issues += [
                DataIssue(
                    table.sources[r], "identical text in test_dataset", "dropped", self.test_dataset
                )
                for r in rows(pool[clash])
            ]
            pool = pool[~clash]
        keep, held = split_indices(len(pool), self.val_fraction, self.seed, codes[pool], "val")
        val, pool = table.keep(rows(pool[held], shuffle=True)), pool[keep]
        subset, rest = labeled_and_rest(codes[pool], self.train_subset, self.seed)
        train = table.keep(rows(pool[subset]))
        if len(set(train.labels)) < 2:
            raise DataValidationError(
                f"The training split of {self.dataset} has one label only ({train.labels[0]!r}): "
                "nothing to classify. Fix: check `label_column` and `classes`."
            )
        self.class_names = list(self.classes or table.class_names or sorted(set(train.labels)))
        self.num_classes = len(self.class_names)
        val, test = self._drop_unseen(train, val, "val"), self._drop_unseen(train, test, "test")
        for name, split in (("train", train), ("val", val), ("test", test)):
            if not len(split):
                raise DataValidationError(
                    f"The {name} split is empty (0 texts). Fix: lower `val_fraction`/"
                    "`test_fraction`, raise `train_subset`, or give more data."
                )
        if self.unlabeled_rest and len(rest):
            # the rest follow the labeled subset, their labels hidden (None; label -1 in batches)
            hidden = table.keep(rows(pool[rest]))
            self.unlabeled_count = len(hidden)
            train = table.keep(rows(pool[subset]) + rows(pool[rest]))
            train.labels = train.labels[: len(train) - len(hidden)] + [None] * len(hidden)
        self.texts = {"train": train, "val": val, "test": test}
        if self.predict_path is not None:
            new = read_text_file(self.predict_path, self.text_column, None, self.encoding_errors)
            self._record(new)
            self.texts["predict"] = new
        self._fit_tokenizer(train.texts)
        log.info(
            f"{table.name}: {len(train)} train / {len(val)} val / {len(test)} test texts, "
            f"{self.num_classes} classes; tokenizer of {len(self.tokenizer)} tokens."
        )
        self._report()

    def _drop_unseen(self, train: TextTable, split: TextTable, name: str) -> TextTable:
        """Apply ``unseen_labels`` to records of ``split`` whose label training lacks."""
        seen = set(train.labels)
        unseen = Counter(label for label in split.labels if label not in seen)
        if not unseen:
            return split
        if self.unseen_labels == "error":
            first = {}
            for source, label in zip(split.sources, split.labels, strict=True):
                first.setdefault(label, source)
            listed = ", ".join(
                f"'{k}' ({v} records, first {first[k]})" for k, v in unseen.most_common()
            )
            raise DataValidationError(
                f"The {name} split has labels the training split lacks: {listed}. A model "
                "cannot learn them. Fix: add training examples of them, leave them out with "
                "`classes`, or set `unseen_labels: drop` (the records are listed)."
            )
        rows = [i for i, label in enumerate(split.labels) if label in seen]
        self.issues += [
            DataIssue(split.sources[i], "label unseen in the training split", "dropped", label)
            for i, label in enumerate(split.labels)
            if label not in seen
        ]
        return split.keep(rows)

    def _dataset(self, name: str) -> TextDataset:
        ids = self._encode(name)
        labels = self.texts[name].labels
        codes = None
        if labels is not None:
            index = {label: i for i, label in enumerate(self.class_names)}
            # None: a label hidden on purpose (`unlabeled_rest`); any other label must be a class
            unknown = [
                j for j, label in enumerate(labels) if label is not None and label not in index
            ]
            if unknown:
                j = unknown[0]
                raise DataValidationError(
                    f"{len(unknown)} {name} records have labels that are not among the classes "
                    f"{self.class_names}; the first is '{labels[j]}' at "
                    f"{self.texts[name].sources[j]}. Fix: set `classes` to the labels to keep "
                    "(records with other labels are then left out and listed)."
                )
            codes = np.array(
                [UNLABELED if label is None else index[label] for label in labels], dtype=np.int64
            )
        augment = None
        if name == "train" and any(self.augment_probs):
            tok = self.tokenizer
            mask_id = tok.mask_token_id if tok.mask_token_id is not None else tok.unk_token_id
            augment = TokenAugment(*self.augment_probs, mask_id, set(tok.all_special_ids))
        weights = self.texts[name].weights if name == "train" else None
        teacher_ids, teacher_pad = None, 0
        if self.teacher_tokenizer is not None and name == "train":
            teacher_ids, _ = encode(self.teacher_tokenizer, self.texts[name].texts, self.max_length)
            teacher_pad = self.teacher_tokenizer.pad_token_id
        return TextDataset(
            ids,
            codes,
            self.tokenizer.pad_token_id,
            augment,
            self.seed,
            weights,
            teacher_ids,
            teacher_pad,
        )

    def use_teacher_tokenizer(self, tokenizer) -> None:
        """Also tokenize the training texts with a distillation teacher's own tokenizer (a
        tokenizer object, a folder or a packaged model's name): training batches then carry
        ``teacher_input_ids`` and ``teacher_attention_mask`` beside the student's ids, the same
        texts cut at the same ``max_length`` in tokens. Called by
        :class:`~lifecycle.stages.distillation.DistillationModule`, whose teacher says its
        tokenizer."""
        if isinstance(tokenizer, str | Path):
            tokenizer = load_tokenizer(str(tokenizer))
        self.teacher_tokenizer = tokenizer
        self._datasets.pop("train", None)  # re-encoded with the teacher's ids on next use

    @property
    def predict_sources(self) -> list[str] | None:
        split = "predict" if "predict" in self.texts else "test"
        return self.texts[split].sources if split in self.texts else None

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict" if "predict" in self.texts else "test", shuffle=False)


def chunk_documents(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each document with special tokens; a document longer than ``max_length``
    becomes several consecutive windows, so no text is lost."""
    out = tokenizer(texts, truncation=True, max_length=max_length, return_overflowing_tokens=True)
    return out["input_ids"]


@contextmanager
def seeded_torch_rng(*seed: int):
    """Inside the block, torch's CPU generator is seeded from ``seed`` (any number of ints);
    after it, the global generator is as it was: for code that takes no generator
    (transformers' ``DataCollatorForLanguageModeling``), without consuming the global RNG."""
    words = np.random.SeedSequence(list(seed)).generate_state(2, np.uint32)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(words[0]) << 32 | int(words[1]))
        yield


class LanguageModelingDataset(Dataset):
    """Token-id rows for (masked or causal) language modelling.

    Batches: ``{"input_ids", "attention_mask", "labels"}`` (labels -100 where no loss is taken),
    padded on the right whatever the tokenizer's ``padding_side``. Training rows are masked
    afresh in every batch by ``collator``, seeded from ``(seed, epoch, the batch's rows)``
    (indices are ``(epoch, i)`` pairs): the same masks on every run, resumed or not, with any
    number of workers, and the global RNG untouched. Evaluation rows get one fixed masking
    (``labels`` given), so held-out perplexity compares across epochs and runs.
    """

    def __init__(
        self,
        ids: list[list[int]],
        pad_id: int,
        collator,
        labels: list[list[int]] | None = None,
        seed: int = 0,
    ):
        self.ids = ids
        self.pad_id = pad_id
        self.collator = collator
        self.labels = labels
        self.seed = seed
        self.epoch_indexed = labels is None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([i]).items()}

    def __getitems__(self, indices: list) -> dict[str, torch.Tensor]:
        pairs = [i if isinstance(i, tuple) else (0, i) for i in indices]
        indices = [i for _, i in pairs]
        # padded here, so the mask is the ids' own: the collator pads on the tokenizer's side
        # (left for some), and leaves rows of one length as they are
        input_ids, mask = pad_rows([self.ids[i] for i in indices], self.pad_id)
        if self.labels is None:
            with seeded_torch_rng(self.seed, pairs[0][0], *indices):
                batch = self.collator(list(input_ids))
            return {
                "input_ids": batch["input_ids"],
                "attention_mask": mask,
                "labels": batch["labels"],
            }
        labels, _ = pad_rows([self.labels[i] for i in indices], -100)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


class CorpusDataModule(TextDataModule):
    """Unlabeled text for language-model pretraining: masked (BERT) or causal (GPT).

    Batches are ``{"input_ids", "attention_mask", "labels"}`` as transformers' language models
    take them: for masked LM, ``mlm_probability`` of the tokens are selected (80% become
    ``[MASK]``, 10% a random token, 10% unchanged; by ``DataCollatorForLanguageModeling``) and
    ``labels`` holds the original ids there and -100 elsewhere; for causal LM ``labels`` is the
    input with padding at -100. Documents longer than ``max_length`` are cut into consecutive
    windows. Validation and test are masked once, with ``seed``, so their perplexity compares.

    Args:
        dataset: one or more built-in names (``fortunes``, ``tweets-sentiment``; labels unused) or
            files: ``.txt`` (one document per line, or separated by ``delimiter`` lines),
            ``.csv``/``.jsonl`` (the ``text_column``).
        text_column: the text column or key of CSV/JSONL files.
        delimiter: for ``.txt`` files, a line separating documents (e.g. ``%``).
        data_dir: where a built-in dataset's files are, when not in the default places.
        tokenizer: ``"bpe"`` or ``"wordpiece"`` to train one on the training split (see
            :class:`TextClassificationDataModule`), or a folder holding a Hugging Face tokenizer
            with a mask token (for masked LM).
        vocab_size: the trained tokenizer's largest vocabulary.
        min_frequency: how often a token must occur to enter a trained vocabulary.
        lowercase: lowercase before a trained tokenizer splits text.
        max_length: tokens per row, special tokens included.
        mlm: masked (``True``) or causal (``False``) language modelling.
        mlm_probability: share of tokens selected for prediction in masked LM.
        val_fraction: share of documents held out for validation.
        test_fraction: share of documents held out for testing.
        deduplicate: keep one copy of identical documents (the rest listed); ``False`` keeps the
            copies, in one split.
        encoding_errors: documents with bytes that are not UTF-8: ``"replace"``, ``"drop"`` or
            ``"error"``.
        batch_size: rows per training batch.
        eval_batch_size: rows per evaluation batch (default ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: seed of the splits and of the masking (of each training batch from ``seed``, the
            epoch and the batch's rows; of validation and test once).
    """

    def __init__(
        self,
        dataset: str | list[str] = "fortunes",
        text_column: str = "text",
        delimiter: str | None = None,
        data_dir: str | None = None,
        tokenizer: str = "bpe",
        vocab_size: int = 8000,
        min_frequency: int = 2,
        lowercase: bool = True,
        max_length: int = 128,
        mlm: bool = True,
        mlm_probability: float = 0.15,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        deduplicate: bool = True,
        encoding_errors: EncodingErrors = "replace",
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
    ):
        super().__init__(
            tokenizer,
            vocab_size,
            min_frequency,
            lowercase,
            max_length,
            val_fraction,
            test_fraction,
            deduplicate,
            encoding_errors,
            batch_size,
            eval_batch_size,
            num_workers,
            seed,
        )
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"`mlm_probability` must be in (0, 1), got {mlm_probability}.")
        self.save_hyperparameters()
        self.datasets = [dataset] if isinstance(dataset, str) else list(dataset)
        self.text_column = text_column
        self.delimiter = delimiter
        self.data_dir = data_dir
        self.mlm = mlm
        self.mlm_probability = mlm_probability

    def setup(self, stage: str | None = None) -> None:
        if self.texts:
            return
        texts, sources = [], []
        for name in self.datasets:
            table = load_text_dataset(
                name, self.data_dir, self.text_column, None, self.encoding_errors, self.delimiter
            )
            if not table.texts:
                dropped = len(table.issues)
                raise DataValidationError(
                    f"The corpus {name} holds no text ({dropped} empty or unreadable records left "
                    "out). Fix: point `dataset` at a file with text: .txt with one document per "
                    "line (or `delimiter` lines between documents), or .csv/.jsonl with a "
                    "`text_column`."
                )
            self._record(table)
            texts += table.texts
            sources += (
                table.sources if len(self.datasets) == 1 else [f"{name}:{s}" for s in table.sources]
            )
        corpus = TextTable("+".join(self.datasets), texts, None, sources)
        groups = self._groups(corpus)
        if self.deduplicate:
            self.issues += [
                DataIssue(
                    corpus.sources[r], "duplicate text", "dropped", f"kept {corpus.sources[g[0]]}"
                )
                for g in groups
                for r in g[1:]
            ]
            groups = [g[:1] for g in groups]
        pool = np.arange(len(groups))
        splits = {}
        for name, fraction in (("test", self.test_fraction), ("val", self.val_fraction)):
            keep, held = split_indices(len(pool), fraction, self.seed, None, name)
            splits[name], pool = pool[held], pool[keep]
        splits["train"] = pool
        self.texts = {
            name: corpus.keep(sorted(r for i in idx for r in groups[i]))
            for name, idx in (
                ("train", splits["train"]),
                ("val", splits["val"]),
                ("test", splits["test"]),
            )
        }
        self._fit_tokenizer(self.texts["train"].texts)
        if self.mlm and self.tokenizer.mask_token is None:
            raise ValueError(
                f"The tokenizer from {self.tokenizer_spec} has no mask token, so masked LM cannot "
                "run. Fix: use a tokenizer with one (or `tokenizer: wordpiece`), or `mlm: false`."
            )
        log.info(
            f"{corpus.name}: {', '.join(f'{len(t)} {n}' for n, t in self.texts.items())} documents; "
            f"tokenizer of {len(self.tokenizer)} tokens."
        )
        self._report()

    def collator(self):
        """transformers' ``DataCollatorForLanguageModeling`` for this tokenizer and objective.
        It draws from torch's global generator, so callers seed it (:func:`seeded_torch_rng`)."""
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(
            self.tokenizer,
            mlm=self.mlm,
            mlm_probability=self.mlm_probability if self.mlm else None,
        )

    def _dataset(self, name: str) -> LanguageModelingDataset:
        ids = chunk_documents(self.tokenizer, self.texts[name].texts, self.max_length)
        pad = self.tokenizer.pad_token_id
        if name == "train":
            return LanguageModelingDataset(ids, pad, self.collator(), seed=self.seed)
        collator, labels, masked = self.collator(), [], []
        with seeded_torch_rng(self.seed, {"val": 1, "test": 2}.get(name, 3)):
            for start in range(0, len(ids), 256):
                rows = ids[start : start + 256]
                input_ids, _ = pad_rows(rows, pad)  # on the right: rows are cut back below
                batch = collator(list(input_ids))
                for j, row in enumerate(rows):
                    masked.append(batch["input_ids"][j, : len(row)].tolist())
                    labels.append(batch["labels"][j, : len(row)].tolist())
        return LanguageModelingDataset(masked, pad, collator, labels)
