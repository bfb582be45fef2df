"""Helpers on token-id rows that the text Datasets and DataModules share: padding a batch,
cutting long documents into windows, and seeding code that draws from torch's global RNG."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from lifecycle.data.tokenization import encode_windows


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids padded to the longest: ``(ids, attention_mask)``, both long (B, L)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[j, : len(row)] = 1
    return ids, mask


def chunk_documents(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each document with special tokens; a document longer than ``max_length``
    becomes several consecutive windows, so no text is lost."""
    return encode_windows(tokenizer, texts, max_length)


@contextmanager
def seeded_torch_rng(*seed: int):
    """Inside the block, torch's CPU generator is seeded from ``seed`` (any number of ints);
    after it, the global generator is as it was: for code that takes no generator
    (transformers' ``DataCollatorForLanguageModeling``), without consuming the global RNG."""
    words = np.random.SeedSequence(list(seed)).generate_state(2, np.uint32)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(words[0]) << 32 | int(words[1]))
        yield
