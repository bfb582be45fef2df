"""``ImageClassificationDataModule``: built-in or user images, split, normalized and batched."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lifecycle.data.augment import (
    PipelineSpec,
    build_pipeline,
    check_keeps_shape,
    pipeline_from_dict,
    pipeline_to_dict,
)
from lifecycle.data.cleaning.manifest import apply_manifest, manifest_for_training
from lifecycle.data.cleaning.records import CleaningRecords
from lifecycle.data.datasets import LoadedDataset, Split, image_files, load_dataset, read_images
from lifecycle.data.loading import SplitDataModule
from lifecycle.data.splits import UNLABELED, labeled_and_rest, split_indices
from lifecycle.data.validation import check_labels, check_not_empty
from lifecycle.errors import ConfigError
from lifecycle.interfaces import DataNeeds

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """Images (``uint8`` N x H x W x C) and labels as dict samples ``{"image", "label"}``
    (``{"image"}`` alone for unlabeled images).

    Without a transform the whole split is normalized once into a float tensor and batches are
    sliced out of it (``__getitems__``), which keeps data loading a small share of a step. With
    an albumentations transform, each image is augmented on the fly, then normalized; indices
    are then ``(epoch, i)`` pairs (an :class:`~lifecycle.data.loading.EpochSampler` draws them)
    and image ``i`` in epoch ``epoch`` is augmented with a random state seeded from
    ``(seed, epoch, i)``, so the augmented samples are the same on every run and with any
    number of DataLoader workers.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        mean: np.ndarray,
        std: np.ndarray,
        transform=None,
        seed: int = 0,
        views: int = 1,
        weights: np.ndarray | None = None,
        view_transform=None,
    ):
        self.labels = torch.as_tensor(labels, dtype=torch.long) if labels is not None else None
        self.weights = (
            torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
        )
        self.size = len(images)
        self.transform = transform
        self.view_transform = view_transform
        self.seed = seed
        augmented = transform is not None or view_transform is not None
        self.views = views if augmented else 1
        self.epoch_indexed = transform is not None
        self.mean = mean.astype(np.float32)
        self.std = std.astype(np.float32)
        self.images = images if augmented else None
        self.tensor = self._normalize(images) if transform is None else None

    def _normalize(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
        x = x.sub_(torch.from_numpy(self.mean)).div_(torch.from_numpy(self.std))
        return x.permute(0, 3, 1, 2).contiguous()  # N, C, H, W

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([i]).items()}

    def augment(self, i: int, epoch: int = 0, view: int = 0, transform=None) -> np.ndarray:
        """Image ``i`` as augmented in ``epoch`` (H, W, C uint8): the same on every call;
        ``view`` > 0 draws further independent augmentations of it. ``transform`` defaults to
        the dataset's own."""
        transform = self.transform if transform is None else transform
        key = [self.seed, epoch, i] + ([view] if view else [])
        state = np.random.SeedSequence(key).generate_state(2)
        transform.set_random_state(np.random.default_rng(state[0]), random.Random(int(state[1])))
        image = transform(image=self.images[i])["image"]
        return image[..., None] if image.ndim == 2 else image

    def __getitems__(self, indices: list) -> dict[str, torch.Tensor]:
        pairs = [(0, i) if isinstance(i, int | np.integer) else i for i in indices]
        index = torch.as_tensor([i for _, i in pairs], dtype=torch.long)

        def augmented(view: int, transform=None) -> torch.Tensor:
            return self._normalize(
                np.stack([self.augment(i, epoch, view, transform) for epoch, i in pairs])
            )

        if self.view_transform is not None:  # evaluation: the plain image, and fixed views
            images = self.tensor[index] if self.tensor is not None else augmented(0)
            views = [augmented(v, self.view_transform) for v in range(self.views)]
        elif self.tensor is None:
            views = [augmented(v) for v in range(self.views)]
            images = views[0]
        else:
            images, views = self.tensor[index], []
        batch = {"image": images, "index": index}
        if len(views) > 1:
            batch["views"] = torch.stack(views, dim=1)
        if self.labels is not None:
            batch["label"] = self.labels[index]
        if self.weights is not None:
            batch["weight"] = self.weights[index]
        return batch


class ImageClassificationDataModule(SplitDataModule):
    """Image classification data: a built-in dataset or the user's own, split, normalized, batched.

    Batches are dicts ``{"image": float (B, C, H, W), "label": long (B,), "index": long (B,)}``
    (``index``: each image's row in its split, which a cached distillation teacher keys on).

    Args:
        dataset: a built-in name (``fashion-mnist``, ``mnist-5k``, ``digits``) or a path: a folder
            with one sub-folder of images per class (optionally ``train/`` and ``test/`` inside),
            or an ``.npz`` with ``x`` (N, H, W[, C]) and ``y`` (and optionally ``x_test``, ``y_test``).
        data_dir: where a built-in dataset's files are, when not in the default places.
        val_fraction: share of the training data held out for validation (stratified, seeded).
        test_fraction: share held out for testing when the dataset has no test split of its own.
        train_subset: use only this many training images (a stratified, seeded subset) — for
            quick runs and small-data experiments. ``None`` uses them all.
        unlabeled_rest: with ``train_subset``, keep the other training images too, with their
            labels hidden (label ``-1``): the unlabeled transfer set that a
            :class:`~lifecycle.stages.distillation.DistillationModule`'s teacher scores. Stages
            that need every label refuse such data.
        batch_size: images per batch, or ``"full"`` for full-batch gradient descent (one batch
            holding the whole training split).
        eval_batch_size: batch size for validation, test and predict (default: ``batch_size``,
            capped at 1024 when that is ``"full"``).
        num_workers: DataLoader worker processes (fork start method; 0 loads in the main process).
        mean: per-channel normalization mean in [0, 1] units; ``None`` computes it on the train split.
        std: per-channel normalization std; ``None`` computes it on the train split.
        image_size: (H, W) to resize user images to; needed when a folder holds mixed sizes.
        channels: 1 or 3 to convert user images to; default is inferred from the images.
        train_transforms: augmentation of training images before normalization: a preset
            (``none``, ``light``, ``medium``, ``heavy``), a list of albumentations transform names
            with their arguments (``[HorizontalFlip, {Affine: {rotate: [-10, 10]}}]``), or an
            albumentations object (see :mod:`lifecycle.data.augment`). It must keep the image size.
        eval_transforms: the same for validation, test and predict images (usually ``None``).
            Both resolved pipelines are saved in the run folder (``transforms.json``) and in each
            checkpoint, and ``validate``/``test``/``predict`` from a checkpoint use the saved ones.
        seed: seed of the splits, subsets and augmentation.
        views: independently augmented views of each training image (needs ``train_transforms``).
            With more than one, training batches also hold ``"views"`` (B, V, C, H, W), e.g. for
            contrastive pretraining; ``"image"`` is always view 0, so a teacher and a student fed
            from the same batch see the very same augmented image. Validation batches then hold
            ``"views"`` as well: the training pipeline's, fixed (the same every epoch), beside
            the plain ``"image"``.
        predict_path: a folder (searched recursively) or file of new, unlabeled images for
            ``predict``; they are converted to the training images' channels and size and
            normalized alike. ``None`` predicts on the test split.
        cleaned_manifest: a ``manifest.csv`` written by ``lifecycle clean``: only its records
            of the training data are used (before the validation split), with its labels, and
            its weights scale each record's training loss. The test split is left as it is:
            without one of its own it is held out of the original data (seeded) before the
            manifest applies, so a cleaned run is scored on the very records, with the very
            labels, of its baseline; manifest rows naming test records are ignored.
    """

    def __init__(
        self,
        dataset: str = "fashion-mnist",
        data_dir: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        train_subset: int | None = None,
        unlabeled_rest: bool = False,
        batch_size: int | Literal["full"] = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        image_size: tuple[int, int] | None = None,
        channels: int | None = None,
        train_transforms: PipelineSpec = None,
        eval_transforms: PipelineSpec = None,
        seed: int = 42,
        predict_path: str | None = None,
        views: int = 1,
        cleaned_manifest: str | None = None,
    ):
        super().__init__()
        if batch_size != "full" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(
                f"`batch_size` must be a positive integer or 'full', got {batch_size!r}."
            )
        if num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0, got {num_workers}.")
        self.save_hyperparameters(ignore=["train_transforms", "eval_transforms"])
        self.dataset = dataset
        self.data_dir = data_dir
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        if unlabeled_rest and train_subset is None:
            raise ValueError(
                "`unlabeled_rest: true` hides the labels of the images outside `train_subset`, "
                "but `train_subset` is not set. Fix: set `train_subset` to the number of labeled "
                "images to keep."
            )
        self.train_subset = train_subset
        self.unlabeled_rest = unlabeled_rest
        self.unlabeled_count = 0
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.mean = mean
        self.std = std
        self.image_size = image_size
        self.channels = channels
        self.train_transforms = train_transforms
        self.eval_transforms = eval_transforms
        self.pipelines = {
            "train": build_pipeline(train_transforms, seed, "train_transforms"),
            "eval": build_pipeline(eval_transforms, seed, "eval_transforms"),
        }
        self.seed = seed
        self.predict_path = predict_path
        if views < 1 or (views > 1 and train_transforms is None):
            raise ValueError(
                f"`views: {views}` needs at least 1 view, and several views need "
                "`train_transforms` (identical copies of an image teach nothing)."
            )
        self.views = views
        self.cleaned_manifest = cleaned_manifest
        self.class_names: list[str] | None = None
        self.num_classes: int | None = None

    # ----------------------------------------------------------------- loading and splitting
    def load(self, skipped: list | None = None) -> LoadedDataset:
        """Read the dataset (no splitting); a hook for subclasses that read data elsewhere.
        With a ``skipped`` list, unreadable image files (and ``.npz`` rows with NaN/Inf pixels)
        are listed there and left out instead of raising."""
        if self._is_folder():
            kwargs = {"image_size": self.image_size, "channels": self.channels, "skipped": skipped}
        else:
            kwargs = {"skipped": skipped} if str(self.dataset).endswith(".npz") else {}
        return load_dataset(self.dataset, self.data_dir, kind="image", **kwargs)

    def _class_names(self, data: LoadedDataset) -> list[str]:
        n_classes = len(data.class_names) if data.class_names else int(data.train.y.max()) + 1
        return data.class_names or [str(i) for i in range(n_classes)]

    def _held_out_test(self, data: LoadedDataset) -> tuple[Split, Split]:
        """``(train, test)``: the dataset's own test split, or one held out of the original
        training records (seeded, stratified) before any cleaning, so a cleaned run and its
        baseline are scored on the same records with the same labels."""
        if data.test is not None:
            return data.train, data.test
        keep, held = split_indices(
            len(data.train), self.test_fraction, self.seed, data.train.y, name="test"
        )
        return data.train.take(keep), data.train.take(held)

    def _apply_manifest(self, data: LoadedDataset) -> LoadedDataset:
        """The manifest's records, labels and weights for ``data.train``; ``data.test`` stays
        as it is (a manifest's rows that name test records are ignored, with a warning)."""
        train = data.train
        sources = train.names()
        test_sources = set(data.test.names()) if data.test is not None else set()
        manifest = manifest_for_training(self.cleaned_manifest, sources, test_sources, self.dataset)
        kept, labels, weights = apply_manifest(
            sources, self._class_names(data), manifest, self.dataset, self.cleaned_manifest
        )
        train = Split(train.x[kept], labels, [sources[i] for i in kept], weights)
        log.warning(
            f"{self.dataset}: the cleaned manifest keeps {len(kept)} of {len(sources)} training "
            f"images ({int((labels != data.train.y[kept]).sum())} relabeled, "
            f"{int((weights != 1).sum())} re-weighted); the test images are left as they are."
        )
        return LoadedDataset(data.name, train, data.test, data.class_names, data.feature_names)

    # ----------------------------------------------------------------- cleaning stage
    def cleaning_records(self):
        """Every readable training image (before the validation split) and the test images,
        for ``lifecycle clean``; unreadable files are listed, not raised. Without a test split
        of its own, the test images are held out of the original data first, exactly as
        :meth:`setup` holds them out, so cleaning never changes them (they are only checked
        for copies in the training images)."""
        skipped: list = []
        data = self.load(skipped=skipped)
        class_names = self._class_names(data)
        check_labels(data.train, len(class_names), "train")
        train, test = self._held_out_test(data)
        self.class_names, self.num_classes = class_names, len(class_names)
        return CleaningRecords(
            "image", train.x, train.y.astype(np.int64), train.names(), class_names,
            test.x if test is not None else None,
            test.names() if test is not None else None,
            skipped,
        )  # fmt: skip

    def use_fold(self, records, train_idx: np.ndarray, val_idx: np.ndarray) -> None:
        """Serve ``records[train_idx]`` as the training split and ``records[val_idx]`` as the
        validation split (K-fold training in the cleaning stage). The cleaning stage hands over
        the fold model's :class:`~lifecycle.interfaces.DataNeeds` first
        (:meth:`apply_data_needs`), so a pretrained backbone's normalization applies here."""

        def make(idx) -> Split:
            fold = records.take(idx)
            return Split(fold.items, fold.labels, fold.sources)

        self.splits = {"train": make(train_idx), "val": make(val_idx)}
        self.class_names = list(records.class_names)
        self.num_classes = len(self.class_names)
        self._normalization(records.items)
        self._datasets = {}
        self._build_datasets()

    def _normalization(self, images: np.ndarray) -> None:
        """``mean``/``std`` from ``images`` where the config leaves them ``None``."""
        if self.mean is not None and self.std is not None:
            return
        pixels = images.reshape(-1, images.shape[-1]).astype(np.float32) / 255.0
        mean = np.asarray(
            self.mean if self.mean is not None else pixels.mean(axis=0), dtype=np.float32
        )
        std = np.asarray(
            self.std if self.std is not None else pixels.std(axis=0) + 1e-6, dtype=np.float32
        )
        self.mean, self.std = mean.tolist(), std.tolist()

    def apply_data_needs(self, needs: DataNeeds) -> None:
        """Take a stage's needs into account before the datasets are built (called at the start
        of :meth:`setup`, and by the cleaning stage before :meth:`use_fold`).

        ``needs.mean``/``needs.std`` (a pretrained backbone's normalization) replace the
        statistics this data would compute; a normalization set in the config is kept, with a
        warning when it differs. A teacher tokenizer means nothing to images and is ignored.

        Raises:
            ConfigError: the datasets were already built with another normalization (the
                DataModule was set up before the stage's needs were known).
        """
        if needs.mean is None:
            return
        source = needs.normalization_source or "the backbone"
        mean, std = list(needs.mean), list(needs.std)
        if self.hparams.get("mean") is not None or self.hparams.get("std") is not None:
            if not (np.allclose(self.mean, mean) and np.allclose(self.std, std)):
                log.warning(
                    f"The data's configured normalization (mean {self.mean}, std {self.std}) "
                    f"differs from the one {source} was trained with (mean {mean}, std "
                    f"{std}); keeping the configured one."
                )
            return
        if self.mean is not None and np.allclose(self.mean, mean) and np.allclose(self.std, std):
            return
        if self.split_datasets_built():
            raise ConfigError(
                f"{type(self).__name__} was set up (normalized with mean {self.mean}, std "
                f"{self.std}) before the stage asked for the normalization {source} was trained "
                f"with (mean {mean}, std {std}). Fix: give the stage a DataModule that is not set "
                f"up yet, or set `data.init_args.mean: {mean}` and `data.init_args.std: {std}`."
            )
        log.info(f"Normalizing with mean {mean}, std {std} from {source}.")
        self.mean, self.std = mean, std

    def _write_transforms(self) -> None:
        """The resolved pipelines and normalization as ``transforms.json`` in the run folder."""
        out = self._run_dir()
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "transforms.json").write_text(json.dumps(self.state_dict(), indent=2) + "\n")

    def _is_folder(self) -> bool:
        return Path(self.dataset).expanduser().is_dir()

    def setup(self, stage: str | None = None) -> None:
        self.apply_stage_needs()
        if self.splits:
            return
        # files the cleaning run found unreadable are not in the manifest: skip them here too
        data = self.load(skipped=[] if self.cleaned_manifest is not None else None)
        n_classes = len(self._class_names(data))
        check_not_empty(data.train, "train")
        check_labels(data.train, n_classes, "train")
        if data.test is not None:
            check_not_empty(data.test, "test")
            check_labels(data.test, n_classes, "test")
        # the test split comes from the original data, before a manifest changes anything
        train, test = self._held_out_test(data)
        data = LoadedDataset(data.name, train, test, data.class_names, data.feature_names)
        if self.cleaned_manifest is not None:
            data = self._apply_manifest(data)
            train = data.train
            check_not_empty(train, "train", "Fix: check that the manifest is for this dataset.")
        keep, held = split_indices(len(train), self.val_fraction, self.seed, train.y, name="val")
        train, val = train.take(keep), train.take(held)
        if self.train_subset is not None:
            subset, rest = labeled_and_rest(train.y, self.train_subset, self.seed)
            train = train.take(np.concatenate([subset, rest]) if self.unlabeled_rest else subset)
            if self.unlabeled_rest:  # the rest follow the labeled subset, their labels hidden
                train.y[len(subset) :] = UNLABELED
                self.unlabeled_count = len(rest)
        for name, split in (("train", train), ("val", val), ("test", test)):
            check_not_empty(
                split, name, "Fix: lower `val_fraction`/`test_fraction` or raise `train_subset`."
            )
        self.splits = {"train": train, "val": val, "test": test}
        self.class_names = self._class_names(data)
        self.num_classes = n_classes
        self._normalization(train.x)
        image = train.x[0]
        for key in ("train", "eval"):
            check_keeps_shape(self.pipelines[key], image, f"{key}_transforms")
        if self.predict_path is not None:
            files = image_files(self.predict_path)
            _, height, width, channels = train.x.shape
            self._predict_images = read_images(
                files, (height, width), channels, where=str(self.predict_path)
            )
            self._predict_sources = [str(p) for p in files]
        self._build_datasets()
        self._write_transforms()

    def _build_datasets(self) -> None:
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        for name, split in self.splits.items():
            transform = self.pipelines["train" if name == "train" else "eval"]
            weights = split.weights if name == "train" else None
            # validation gets fixed augmented views too (a contrastive loss needs them);
            # its "image" stays the plain evaluation image
            view_transform = self.pipelines["train"] if name == "val" and self.views > 1 else None
            self._datasets[name] = ImageDataset(
                split.x,
                split.y,
                mean,
                std,
                transform,
                self.seed,
                self.views if name in ("train", "val") else 1,
                weights,
                view_transform,
            )
        if self.predict_path is not None:
            self._datasets["predict"] = ImageDataset(
                self._predict_images, None, mean, std, self.pipelines["eval"], self.seed
            )

    # ----------------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict:
        """The resolved pipelines and normalization, so a checkpoint reproduces its inputs."""
        return {
            "train_transforms": pipeline_to_dict(self.pipelines["train"]),
            "eval_transforms": pipeline_to_dict(self.pipelines["eval"]),
            "mean": self.mean,
            "std": self.std,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Use a checkpoint's pipelines and normalization instead of the config's."""
        if "eval_transforms" not in state_dict:
            return
        self.pipelines = {
            "train": pipeline_from_dict(state_dict["train_transforms"]),
            "eval": pipeline_from_dict(state_dict["eval_transforms"]),
        }
        self.mean, self.std = state_dict["mean"], state_dict["std"]
        if self.splits:
            self._build_datasets()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images a model receives."""
        x = self.splits["train"].x
        return (x.shape[3], x.shape[1], x.shape[2])

    def batch_size_for(self, name: str) -> int:
        if name == "train":
            return super().batch_size_for(name)
        return self.eval_batch_size or (1024 if self.batch_size == "full" else self.batch_size)
