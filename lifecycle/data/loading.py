"""DataLoaders shared by every DataModule: batched fetching, fork workers, a seeded shuffle."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, default_collate


def collate_batch(batch):
    """Our datasets' ``__getitems__`` return a whole collated dict batch; anything else is collated as usual."""
    return batch if isinstance(batch, dict) else default_collate(batch)


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int
) -> DataLoader:
    """A DataLoader with fork workers (fast to start; at most 2 are useful on 2 cores) and a seeded shuffle."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_batch,
        persistent_workers=num_workers > 0,
        multiprocessing_context="fork" if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )
