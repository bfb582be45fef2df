"""The text Datasets: labelled texts as token ids (:class:`TextDataset`) and rows for language
modelling (:class:`LanguageModelingDataset`). Each batches itself (``__getitems__``), padding
to the batch's longest row."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lifecycle.data.augment import TokenAugment
from lifecycle.data.text.records import pad_rows, seeded_torch_rng
from lifecycle.errors import ConfigError


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
            raise ConfigError(
                "Token augmentation (`augment_mask`/`augment_delete`/`augment_swap`) edits one "
                "tokenizer's ids, so a teacher with its own tokenizer could not see the same "
                "augmented text as the student. Fix: set `data.init_args.augment_mask`, "
                "`augment_delete` and `augment_swap` to 0 for distillation, or give the student "
                "the teacher's tokenizer (`data.init_args.tokenizer`: the teacher's folder)."
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
