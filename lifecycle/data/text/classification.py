"""``TextClassificationDataModule``: labelled texts, split without leakage, de-duplicated by
:func:`~lifecycle.data.dedup.kept_record`, tokenized for the student (and a distillation
teacher), batched."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from torch.utils.data import DataLoader

from lifecycle.data.augment import TokenAugment
from lifecycle.data.cleaning.manifest import apply_manifest, manifest_for_training
from lifecycle.data.cleaning.records import CleaningRecords
from lifecycle.data.corpora import EncodingErrors, TextTable, load_text_dataset, read_text_file
from lifecycle.data.datasets import DataValidationError
from lifecycle.data.dedup import standard_text, text_key
from lifecycle.data.splits import UNLABELED, labeled_and_rest, split_indices
from lifecycle.data.text.base import TextDataModule
from lifecycle.data.text.datasets import TextDataset
from lifecycle.data.tokenization import encode, load_tokenizer
from lifecycle.data.validation import DataIssue, summarize_issues
from lifecycle.interfaces import DataNeeds, stage_data_needs, trainer_stage

log = logging.getLogger(__name__)


class TextClassificationDataModule(TextDataModule):
    """Labelled texts: a built-in dataset or the user's CSV/JSONL, split, tokenized, batched.

    Batches are ``{"input_ids": long (B, L), "attention_mask": long (B, L), "label": long (B,)}``,
    padded to the batch's longest text.

    Splits are seeded and stratified by label, and identical texts (ignoring case and spacing)
    never land in two splits. With ``deduplicate`` each such group keeps one record: the first
    with the group's most common label, or, when labels tie, the first of the tied labels' (the
    one rule of :func:`~lifecycle.data.dedup.kept_record`, which ``lifecycle clean`` applies
    too). Every record left out is listed with its reason in ``data_issues.csv`` (``duplicate
    text``, ``duplicate text, outvoted label`` or ``duplicate text, tied label``).

    A distillation teacher with its own tokenizer is met through :meth:`apply_data_needs`
    (before :meth:`setup` encodes anything): training batches then also carry
    ``teacher_input_ids`` and ``teacher_attention_mask``.

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
        self._teacher_spec = None  # what apply_data_needs was given, to skip a repeat
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

    def setup(self, stage: str | None = None) -> None:
        self.apply_data_needs(stage_data_needs(trainer_stage(self)))
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
        if name == "train" and self.teacher_tokenizes_differently:
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

    def apply_data_needs(self, needs: DataNeeds) -> None:
        """Meet a stage's :class:`~lifecycle.interfaces.DataNeeds` before the datasets are
        encoded: called at the start of :meth:`setup`, and by ``lifecycle clean`` before
        :meth:`use_fold`.

        ``needs.teacher_tokenizer`` (a tokenizer, a folder or a packaged model's name; loaded
        with :func:`~lifecycle.data.tokenization.load_tokenizer`) is a distillation teacher's
        own tokenizer. The stage passes it whenever its teacher has one; the DataModule decides,
        because only it knows the student's tokenizer (trained in ``setup``): training texts are
        also encoded with the teacher's tokenizer only when its vocabulary differs from the
        student's (``get_vocab()``), the same texts cut at the same ``max_length`` in tokens.
        An equal vocabulary gives the teacher the student's ids, and token augmentation stays
        allowed. ``needs.mean``/``std`` (an image backbone's normalization) concern images
        only: texts have none to apply, so they are ignored.

        Raises:
            MissingFileError: the teacher's tokenizer folder does not exist or holds none.
            DataError: its files cannot be loaded. (Token augmentation with a teacher that
                tokenizes differently is refused, as a ``ConfigError``, when the training set
                is built.)
        """
        spec = needs.teacher_tokenizer
        if spec is self._teacher_spec or (
            isinstance(spec, str | Path) and spec == self._teacher_spec
        ):
            return  # the same teacher as before: nothing to encode again
        self._teacher_spec = spec
        loaded = isinstance(spec, str | Path)
        self.teacher_tokenizer = load_tokenizer(str(spec)) if loaded else spec
        self._datasets.pop("train", None)  # encoded before, without this teacher's ids

    @property
    def teacher_tokenizes_differently(self) -> bool:
        """Whether training batches carry the teacher's own token ids: there is a teacher
        tokenizer (:meth:`apply_data_needs`) whose vocabulary differs from the student's."""
        teacher = self.teacher_tokenizer
        if teacher is None or self.tokenizer is None:
            return False
        return teacher.get_vocab() != self.tokenizer.get_vocab()

    @property
    def predict_sources(self) -> list[str] | None:
        split = "predict" if "predict" in self.texts else "test"
        return self.texts[split].sources if split in self.texts else None

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict" if "predict" in self.texts else "test", shuffle=False)
