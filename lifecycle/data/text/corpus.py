"""``CorpusDataModule``: unlabeled text for masked or causal language-model pretraining."""

from __future__ import annotations

import logging

import numpy as np
from transformers import DataCollatorForLanguageModeling

from lifecycle.data.corpora import EncodingErrors, TextTable, load_text_dataset
from lifecycle.data.datasets import DataValidationError
from lifecycle.data.splits import split_indices
from lifecycle.data.text.base import TextDataModule
from lifecycle.data.text.datasets import LanguageModelingDataset
from lifecycle.data.text.records import chunk_documents, pad_rows, seeded_torch_rng
from lifecycle.errors import ConfigError
from lifecycle.interfaces import DataNeeds, stage_data_needs, trainer_stage

log = logging.getLogger(__name__)


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
            :class:`~lifecycle.data.text.TextClassificationDataModule`), or a folder holding a
            Hugging Face tokenizer with a mask token (for masked LM).
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

    def apply_data_needs(self, needs: DataNeeds) -> None:
        """Meet a stage's :class:`~lifecycle.interfaces.DataNeeds` (called at the start of
        :meth:`setup`). A language-model stage needs nothing of the data, so the needs are
        normally empty; ``mean``/``std`` concern images and are ignored (texts have no
        normalization).

        Raises:
            ConfigError: ``needs.teacher_tokenizer`` is set: distillation needs labelled texts
                (:class:`~lifecycle.data.text.TextClassificationDataModule`), not a corpus.
        """
        if needs.teacher_tokenizer is not None:
            raise ConfigError(
                "The stage needs the training texts tokenized for a distillation teacher, but "
                "CorpusDataModule serves unlabeled text for language-model pretraining and "
                "cannot. Fix: use `data.class_path: lifecycle.data.TextClassificationDataModule` "
                "for distillation."
            )

    def setup(self, stage: str | None = None) -> None:
        self.apply_data_needs(stage_data_needs(trainer_stage(self)))
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
        groups = self._dedupe(corpus)
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
            raise ConfigError(
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
        It draws from torch's global generator, so callers seed it
        (:func:`~lifecycle.data.text.records.seeded_torch_rng`)."""
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
                batch_ids, batch_labels = batch["input_ids"].tolist(), batch["labels"].tolist()
                for j, row in enumerate(rows):
                    masked.append(batch_ids[j][: len(row)])
                    labels.append(batch_labels[j][: len(row)])
        return LanguageModelingDataset(masked, pad, collator, labels)
