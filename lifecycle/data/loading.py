"""DataLoaders shared by every DataModule: batched fetching, fork workers, a seeded shuffle, and
resuming mid-epoch exactly where a killed run stopped."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from lifecycle.data.datasets import Split
from lifecycle.errors import ConfigError
from lifecycle.interfaces import DataNeeds, stage_data_needs, trainer_stage


def collate_batch(batch):
    """Our datasets' ``__getitems__`` return a whole collated dict batch; anything else is collated as usual."""
    return batch if isinstance(batch, dict) else default_collate(batch)


class EpochSampler(DistributedSampler):
    """A seeded shuffle that changes every epoch and depends on ``(seed, epoch)`` alone, so a run
    resumed in epoch ``e`` sees epoch ``e``'s order. With ``with_epoch`` it yields
    ``(epoch, index)`` pairs, so a dataset can seed each sample's augmentation from
    ``(seed, epoch, index)``: the same augmented samples on every run, whatever the number of
    DataLoader workers. Lightning calls :meth:`set_epoch` before each epoch (also on resume).

    Under DDP or FSDP (a process group of ``W`` ranks) it shards itself: rank ``r`` takes
    positions ``r, r + W, r + 2W, ...`` of the same order, so one step of ``W`` ranks with batch
    ``B`` sees exactly the samples one device with batch ``W x B`` would. Every rank gets
    ``ceil(N / W)`` positions, so all ranks run the same number of steps (under FSDP or
    DeepSpeed ZeRO-3 every forward is a collective: a rank with one batch more would wait
    forever). Training pads the order with its first samples; evaluation (``shuffle=False``)
    pads it with ``None``, which :class:`PaddedDataset` turns into records flagged
    ``batch["padding"]`` that the stages leave out of losses, metrics and predictions, so every
    record counts exactly once. Being a ``DistributedSampler``, Lightning uses it as it is
    instead of wrapping it in a second, differently seeded shuffle.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, with_epoch: bool = True):
        # DistributedSampler.__init__ would ask for the process group now; it is read per epoch
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0
        self.with_epoch = with_epoch
        self.drop_last = False

    @property
    def num_replicas(self) -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        world = self.num_replicas
        return self.size if world == 1 else math.ceil(self.size / world)

    def __iter__(self):
        epoch = self.epoch
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        world = self.num_replicas
        if world > 1:
            if self.size % world:
                missing = world - self.size % world
                order += order[:missing] if self.shuffle else [None] * missing
            order = order[self.rank :: world]
        if self.with_epoch:
            return (i if i is None else (epoch, i) for i in order)
        return iter(order)


class PaddedDataset(Dataset):
    """An evaluation dataset as a sharded :class:`EpochSampler` reads it: a ``None`` position
    (the padding that gives every rank the same number of batches) becomes a stand-in record
    (another record of the batch, or the first one) so shapes stay valid, and a batch holding
    padding gets ``batch["padding"]``, a ``bool`` (B,) tensor that is ``True`` on the stand-ins.
    Stages drop those rows from losses, metrics and predictions (:func:`real_records`).
    Batches without padding are the wrapped dataset's own, unchanged. Other attributes are the
    wrapped dataset's.

    Args:
        dataset: the evaluation dataset; its samples (or ``__getitems__`` batches) are dicts.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, i):
        return self.dataset[i]

    def _fetch(self, indices: list):
        """What the wrapped dataset gives for ``indices``, before the loader's ``collate_fn``."""
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(indices)
        return [self.dataset[i] for i in indices]

    def __getitems__(self, indices: list):
        padding = [i is None for i in indices]
        if not any(padding):
            return self._fetch(indices)
        real = [i for i in indices if i is not None]
        first = (0, 0) if getattr(self.dataset, "epoch_indexed", False) else 0
        stand_in = real[0] if real else first
        batch = collate_batch(self._fetch([stand_in if i is None else i for i in indices]))
        if not isinstance(batch, dict):
            raise TypeError(
                f"{type(self.dataset).__name__} gives {type(batch).__name__} batches, but a "
                "sharded evaluation loader marks its padding records in a dict batch "
                "(`batch['padding']`). Fix: return dict samples, as the lifecycle datasets do."
            )
        batch["padding"] = torch.tensor(padding)
        return batch


def real_records(batch: dict, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` (one row per record of ``batch``: outputs, targets) without the rows of the
    padding that a sharded evaluation loader adds so every rank runs the same number of steps
    (``batch["padding"]``, see :class:`PaddedDataset`); unchanged for a batch without padding.
    Any stage's evaluation computes its losses, metrics and predictions on these rows."""
    padding = batch.get("padding")
    if padding is None:
        return tensors
    keep = ~padding.to(device=tensors[0].device, dtype=torch.bool)
    return tuple(t[keep] for t in tensors)


class ResumableDataLoader(DataLoader):
    """A DataLoader that a resumed run continues mid-epoch: Lightning saves its
    :meth:`state_dict` (the batches of the current epoch already handed out) in every checkpoint
    and gives it back through :meth:`load_state_dict` on resume; the next epoch then starts by
    passing over that many batches, so training sees exactly the batches an uninterrupted run
    would have. Lightning does not prefetch from a loader with a length, so the count is the
    number of batches trained on. The skipped batches are read again (cheap next to training)
    but not returned. Same arguments as ``torch.utils.data.DataLoader``.
    """

    _batches_done = 0
    _skip = 0

    def __iter__(self):
        iterator = super().__iter__()
        skip, self._skip = self._skip, 0
        self._batches_done = 0
        return self._counted(iterator, skip)

    def _counted(self, iterator, skip: int):
        for _ in range(skip):
            if next(iterator, None) is None:
                return
            self._batches_done += 1
        for batch in iterator:
            self._batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"batches_done": self._batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        done = int(state.get("batches_done", 0))
        # a checkpoint from the end of an epoch resumes at the start of the next one
        self._skip = done if 0 < done < len(self) else 0


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int
) -> DataLoader:
    """A :class:`ResumableDataLoader` with fork workers (fast to start; at most 2 are useful on
    2 cores) and an :class:`EpochSampler` (yielding ``(epoch, index)`` to datasets that seed
    samples, ``epoch_indexed``). The loader's own generator also draws the workers' base seed, so
    iterating never consumes the global torch RNG (dropout draws from it: a resumed run must find
    it where the uninterrupted run left it). Evaluation loaders (``shuffle=False``) read through
    a :class:`PaddedDataset`, which flags the padding of a sharded evaluation."""
    sampler = EpochSampler(len(dataset), shuffle, seed, getattr(dataset, "epoch_indexed", False))
    return ResumableDataLoader(
        dataset if shuffle else PaddedDataset(dataset),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_batch,
        persistent_workers=num_workers > 0,
        multiprocessing_context="fork" if num_workers > 0 else None,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
    )


class SplitDataModule(L.LightningDataModule):
    """Base of DataModules whose ``setup`` fills ``self.splits`` and ``self._datasets`` with
    ``train``, ``val`` and ``test``, and optionally ``self._datasets["predict"]`` (with its
    ``self._predict_sources``) for data outside the splits.

    Subclasses set ``batch_size`` (an int or ``"full"``), ``num_workers`` and ``seed``; predict
    uses the ``predict`` dataset when there is one, else the test split.

    Data flows one way: a subclass's ``setup`` starts with :meth:`apply_stage_needs`, which
    hands the Trainer's stage's :class:`~lifecycle.interfaces.DataNeeds` to
    :meth:`apply_data_needs` before any dataset is built, so the datasets are built once.
    """

    batch_size: int | str
    num_workers: int
    seed: int

    def __init__(self):
        super().__init__()
        self.splits: dict[str, Split] = {}
        self._datasets: dict[str, Dataset] = {}
        self._predict_sources: list[str] | None = None

    def apply_data_needs(self, needs: DataNeeds) -> None:
        """Meet a stage's :class:`~lifecycle.interfaces.DataNeeds` (see
        :class:`~lifecycle.interfaces.AcceptsDataNeeds`). This default accepts empty needs
        and refuses any other: a DataModule that cannot normalize images or tokenize for a
        teacher must say so rather than train on data in the wrong form. DataModules that can
        meet needs override it.

        Raises:
            ConfigError: ``needs`` asks for something this DataModule cannot do.
        """
        wanted = []
        if needs.mean is not None:
            wanted.append(
                f"images normalized as {needs.normalization_source or 'the backbone'} was "
                f"trained (mean {list(needs.mean)}, std {list(needs.std)})"
            )
        if needs.teacher_tokenizer is not None:
            wanted.append("texts tokenized with a teacher's own tokenizer")
        if wanted:
            raise ConfigError(
                f"The stage needs {' and '.join(wanted)}, which {type(self).__name__} cannot "
                "give. Fix: use a backbone and stage that fit this data (e.g. a backbone not "
                "pretrained on images for tables), or a DataModule of the data the stage needs."
            )

    def apply_stage_needs(self) -> None:
        """:meth:`apply_data_needs` with the needs of the stage of the Trainer this DataModule
        is attached to (nothing without a Trainer); what every subclass's ``setup`` does
        first, before it builds a dataset."""
        self.apply_data_needs(stage_data_needs(trainer_stage(self)))

    def split_datasets_built(self) -> bool:
        """Whether ``setup`` (or ``use_fold``) has built any dataset yet."""
        return bool(self._datasets)

    def _run_dir(self) -> Path | None:
        """The run folder (the Trainer's logger's), on the process that writes files; ``None``
        without a Trainer or a logger (``logger=False``: nothing is written beside the checkpoints)."""
        trainer = self.trainer
        if trainer is None or not trainer.loggers:
            return None
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask
        if log_dir is None or not trainer.is_global_zero:
            return None
        return Path(log_dir)

    @property
    def predict_sources(self) -> list[str] | None:
        """Where each predicted sample came from (file or row), in ``predict_dataloader`` order."""
        if "predict" in self._datasets:
            return self._predict_sources
        return self.splits["test"].sources if "test" in self.splits else None

    def batch_size_for(self, name: str) -> int:
        """Rows per batch of split ``name``; ``"full"`` means the whole split in one batch."""
        return len(self._datasets[name]) if self.batch_size == "full" else int(self.batch_size)

    def split_dataset(self, name: str) -> Dataset:
        """The dataset of split ``name`` (``train``, ``val``, ``test``, ``predict``), after
        ``setup``."""
        return self._datasets[name]

    def example_batch(self, name: str = "train", size: int = 2) -> dict:
        """The first ``size`` records of split ``name`` as one batch, as the loaders give them:
        what a stage probes shapes with before training."""
        dataset = self.split_dataset(name)
        rows = list(range(min(size, len(dataset))))
        if hasattr(dataset, "__getitems__"):
            return collate_batch(dataset.__getitems__(rows))
        return default_collate([dataset[i] for i in rows])

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return make_loader(
            self.split_dataset(name),
            self.batch_size_for(name),
            shuffle,
            self.num_workers,
            self.seed,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict" if "predict" in self._datasets else "test", shuffle=False)
