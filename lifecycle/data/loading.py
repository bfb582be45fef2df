"""DataLoaders shared by every DataModule: batched fetching, fork workers, a seeded shuffle."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from lifecycle.data.datasets import Split


def collate_batch(batch):
    """Our datasets' ``__getitems__`` return a whole collated dict batch; anything else is collated as usual."""
    return batch if isinstance(batch, dict) else default_collate(batch)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` pairs: a seeded shuffle that changes every epoch, and the epoch
    each sample is drawn in, so a dataset can seed each sample's augmentation from
    ``(seed, epoch, index)`` alone: the same augmented samples on every run, whatever the number
    of DataLoader workers. Lightning calls :meth:`set_epoch` before each epoch (also on resume).
    """

    def __init__(self, size: int, shuffle: bool, seed: int):
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        epoch = self.epoch
        if not self.shuffle:
            return ((epoch, i) for i in range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return ((epoch, i) for i in torch.randperm(self.size, generator=generator).tolist())


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int
) -> DataLoader:
    """A DataLoader with fork workers (fast to start; at most 2 are useful on 2 cores) and a
    seeded shuffle; an :class:`EpochSampler` for datasets that seed samples (``epoch_indexed``)."""
    if getattr(dataset, "epoch_indexed", False):
        order = {"sampler": EpochSampler(len(dataset), shuffle, seed)}
    else:
        order = {"shuffle": shuffle}
        order["generator"] = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_batch,
        persistent_workers=num_workers > 0,
        multiprocessing_context="fork" if num_workers > 0 else None,
        **order,
    )


class SplitDataModule(L.LightningDataModule):
    """Base of DataModules whose ``setup`` fills ``self.splits`` and ``self._datasets`` with
    ``train``, ``val`` and ``test``, and optionally ``self._datasets["predict"]`` (with its
    ``self._predict_sources``) for data outside the splits.

    Subclasses set ``batch_size`` (an int or ``"full"``), ``num_workers`` and ``seed``; predict
    uses the ``predict`` dataset when there is one, else the test split.
    """

    batch_size: int | str
    num_workers: int
    seed: int

    def __init__(self):
        super().__init__()
        self.splits: dict[str, Split] = {}
        self._datasets: dict[str, Dataset] = {}
        self._predict_sources: list[str] | None = None

    def _run_dir(self) -> Path | None:
        """The run folder (the Trainer's logger's), on the process that writes files; ``None``
        without a Trainer or a logger (``logger=False``: nothing is written beside the checkpoints)."""
        trainer = self.trainer
        if trainer is None or not trainer.loggers or not trainer.is_global_zero:
            return None
        if trainer.log_dir is None:
            return None
        return Path(trainer.log_dir)

    @property
    def predict_sources(self) -> list[str] | None:
        """Where each predicted sample came from (file or row), in ``predict_dataloader`` order."""
        if "predict" in self._datasets:
            return self._predict_sources
        return self.splits["test"].sources if "test" in self.splits else None

    def batch_size_for(self, name: str) -> int:
        """Rows per batch of split ``name``; ``"full"`` means the whole split in one batch."""
        return len(self._datasets[name]) if self.batch_size == "full" else int(self.batch_size)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return make_loader(
            self._datasets[name], self.batch_size_for(name), shuffle, self.num_workers, self.seed
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict" if "predict" in self._datasets else "test", shuffle=False)
