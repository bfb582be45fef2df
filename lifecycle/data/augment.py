"""Image augmentation pipelines as data: presets, lists of transform names from YAML, or
albumentations objects, resolved into one ``A.Compose`` that serializes to JSON.

A pipeline spec is any of:

- ``None``: no augmentation;
- a preset name: ``"none"``, ``"light"``, ``"medium"``, ``"heavy"`` or ``"simclr"`` (see :data:`PRESETS`);
- a list of albumentations transform names, each alone (default arguments) or as a one-key
  mapping to its arguments, e.g. ``["HorizontalFlip", {"Affine": {"rotate": [-10, 10]}}]``;
- an albumentations transform or ``Compose`` (from Python, or from YAML by ``class_path``).

:func:`build_pipeline` turns a spec into an ``A.Compose``; :func:`pipeline_to_dict` /
:func:`pipeline_from_dict` store it and read it back (``albumentations.to_dict``/``from_dict``),
which is how a run folder and a checkpoint keep the exact pipeline a model was trained with.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import albumentations as A
import numpy as np

from lifecycle.errors import ConfigError

PipelineSpec = str | list[str | dict[str, dict[str, Any]]] | A.BaseCompose | A.BasicTransform | None
"""What ``train_transforms``/``eval_transforms`` accept (see the module docstring)."""

PRESETS: dict[str, list] = {
    "none": [],
    # shifts of up to ~2 pixels on 28-32 px images, and mirror images
    "light": [
        {"HorizontalFlip": {"p": 0.5}},
        {"Affine": {"translate_percent": [-0.0625, 0.0625], "p": 0.5}},
    ],
    # shifts of up to ~2 px, slight zoom, and one erased patch (Cutout) of 15-25% of the side.
    # Chosen by validation accuracy on 5k Fashion-MNIST images among variants with rotation,
    # without zoom, or with more Cutout (benchmarks/augmentation.py gives the figures).
    "medium": [
        {"HorizontalFlip": {"p": 0.5}},
        {"Affine": {"translate_percent": [-0.0625, 0.0625], "scale": [0.95, 1.05], "p": 0.7}},
        {
            "CoarseDropout": {
                "num_holes_range": [1, 1],
                "hole_height_range": [0.15, 0.25],
                "hole_width_range": [0.15, 0.25],
                "fill": 0,
                "p": 0.5,
            }
        },
    ],
    # stronger geometry, brightness/contrast, noise and up to two erased patches
    "heavy": [
        {"HorizontalFlip": {"p": 0.5}},
        {
            "Affine": {
                "translate_percent": [-0.125, 0.125],
                "scale": [0.85, 1.15],
                "rotate": [-15, 15],
                "shear": [-8, 8],
                "p": 0.9,
            }
        },
        {"RandomBrightnessContrast": {"brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5}},
        {"GaussNoise": {"std_range": [0.02, 0.06], "p": 0.3}},
        {
            "CoarseDropout": {
                "num_holes_range": [1, 2],
                "hole_height_range": [0.2, 0.4],
                "hole_width_range": [0.2, 0.4],
                "fill": 0,
                "p": 0.7,
            }
        },
    ],
    # views for contrastive pretraining (SimCLR): a random crop of 50-100% of the side, resized
    # back (a zoom of 1-2x, each axis on its own), anywhere in the image; mirror images;
    # strong brightness/contrast changes (colour jitter for grey images)
    "simclr": [
        {"HorizontalFlip": {"p": 0.5}},
        {
            "Affine": {
                "scale": {"x": [1.0, 2.0], "y": [1.0, 2.0]},
                "translate_percent": [-0.25, 0.25],
                "p": 1.0,
            }
        },
        {"RandomBrightnessContrast": {"brightness_limit": 0.4, "contrast_limit": 0.4, "p": 0.8}},
    ],
}
"""Presets for small grey or RGB images (no colour-only transforms, so one channel works).
They flip horizontally: for digits or text in images, list transforms without the flip."""


class AugmentationError(ConfigError):
    """A pipeline spec names an unknown transform, gives it a wrong argument, or changes the
    image's shape where the model expects a fixed one; the message names the transform and the fix."""


def transform_names() -> list[str]:
    """Every albumentations transform class name (``HorizontalFlip``, ``Affine``, ...)."""
    return sorted(
        name
        for name, obj in vars(A).items()
        if isinstance(obj, type)
        and issubclass(obj, A.BasicTransform | A.BaseCompose)
        and not name.startswith("_")
        and not inspect.isabstract(obj)
    )


def _transform(name: str, args: dict[str, Any], where: str) -> A.BasicTransform | A.BaseCompose:
    names = transform_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise AugmentationError(
            f"{where}: unknown albumentations transform '{name}'.{hint} "
            "Fix: use a class name from albumentations (e.g. HorizontalFlip, Affine, CoarseDropout) "
            f"or a preset: {', '.join(PRESETS)}."
        )
    cls = getattr(A, name)
    accepted = set(inspect.signature(cls).parameters) - {"self", "args", "kwargs"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise AugmentationError(
            f"{where}: {name} has no argument(s) {unknown}. Fix: use {sorted(accepted)}."
        )
    try:
        # albumentations' own warnings (e.g. "ShiftScaleRotate ... use Affine instead") reach the
        # user: none that a valid spec triggers is known to be harmless, so none is muted
        return cls(**args)
    except (ValueError, TypeError) as err:  # pydantic's ValidationError is a ValueError
        first = str(err).strip().splitlines()
        raise AugmentationError(
            f"{where}: {name}({', '.join(f'{k}={v!r}' for k, v in args.items())}) is invalid: "
            f"{' '.join(first[:3])}. Fix: see help(albumentations.{name}) for each argument's type "
            "and range."
        ) from err


def build_pipeline(
    spec: PipelineSpec, seed: int | None = None, where: str = "transforms"
) -> A.Compose | None:
    """Resolve a pipeline spec (see the module docstring) into an ``A.Compose``.

    Args:
        spec: the spec; ``None`` and the ``"none"`` preset give ``None`` (no augmentation).
        seed: seed of the pipeline's own random state (albumentations ignores global seeds).
        where: the config field, for error messages.

    Raises:
        AugmentationError: an unknown preset or transform (with the closest valid names), or an
            argument the transform does not take or rejects.
    """
    if spec is None:
        return None
    if isinstance(spec, A.BaseCompose | A.BasicTransform):
        pipeline = spec if isinstance(spec, A.Compose) else A.Compose([spec])
        pipeline.set_random_seed(seed)
        return pipeline
    if isinstance(spec, str):
        if spec not in PRESETS:
            if spec in transform_names():
                return build_pipeline([spec], seed, where)
            close = difflib.get_close_matches(spec, list(PRESETS) + transform_names(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise AugmentationError(
                f"{where}: '{spec}' is neither a preset ({', '.join(PRESETS)}) nor an "
                f"albumentations transform.{hint}"
            )
        if spec == "none":
            return None
        spec = PRESETS[spec]
    transforms = []
    for i, item in enumerate(spec):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            transforms.append(_transform(item, {}, at))
        elif isinstance(item, dict) and len(item) == 1:
            ((name, args),) = item.items()
            transforms.append(_transform(name, dict(args or {}), at))
        else:
            raise AugmentationError(
                f"{at}: expected a transform name or a one-key mapping {{Name: {{argument: value}}}}, "
                f"got {item!r}."
            )
    return A.Compose(transforms, seed=seed)


def pipeline_to_dict(pipeline: A.BaseCompose | None) -> dict | None:
    """A JSON-ready description of ``pipeline`` (``albumentations.to_dict``)."""
    return A.to_dict(pipeline) if pipeline is not None else None


def pipeline_from_dict(data: dict | None) -> A.Compose | None:
    """Inverse of :func:`pipeline_to_dict`."""
    return A.from_dict(data) if data is not None else None


def check_keeps_shape(pipeline: A.BaseCompose | None, image: np.ndarray, where: str) -> None:
    """Raise when ``pipeline`` changes the shape of ``image`` (H, W, C), naming the transform.

    Every transform is applied to a copy of ``image`` with ``p=1`` semantics where it has a
    probability, so a shape change that happens only sometimes is caught too.
    """
    if pipeline is None:
        return
    for transform in pipeline.transforms:
        probe = A.Compose([transform], p=1.0)
        saved = getattr(transform, "p", None)
        if saved is not None:
            transform.p = 1.0
        try:
            out = probe(image=image.copy())["image"]
        finally:
            if saved is not None:
                transform.p = saved
            pipeline.set_random_seed(getattr(pipeline, "seed", None))  # the probe re-seeded it
        out = out[..., None] if out.ndim == 2 else out
        if out.shape != image.shape:
            raise AugmentationError(
                f"{where}: {type(transform).__name__} turns a {image.shape[0]}x{image.shape[1]} "
                f"image with {image.shape[2]} channel(s) into {out.shape[0]}x{out.shape[1]} with "
                f"{out.shape[2]}, but the model takes {image.shape[0]}x{image.shape[1]}. Fix: give "
                f"it a size of {image.shape[0]}x{image.shape[1]} (e.g. RandomResizedCrop size "
                f"[{image.shape[0]}, {image.shape[1]}]), follow it with Resize, or leave it out."
            )


def preview(datamodule, samples: int = 8, views: int = 5, split: str = "train"):
    """A grid of ``samples`` images (rows): the original, then ``views`` augmented versions as
    training sees them in epochs 0, 1, ... (the same pictures on every call).

    Args:
        datamodule: an :class:`~lifecycle.data.images.ImageClassificationDataModule` (set up here
            when needed).
        samples: images to show, one per class first (so every class appears when it can).
        views: augmented versions of each.
        split: ``"train"`` (the train pipeline) or ``"val"``/``"test"`` (the eval pipeline).

    Returns:
        A matplotlib ``Figure`` (built without pyplot).
    """
    from matplotlib.figure import Figure

    datamodule.setup("fit")
    dataset = datamodule.split_dataset(split)
    labels = datamodule.splits[split].y
    names = datamodule.class_names or [str(c) for c in sorted(set(labels))]
    first = [int(np.flatnonzero(labels == c)[0]) for c in sorted(set(labels.tolist()))]
    rest = [i for i in range(len(labels)) if i not in set(first)]
    rows = (first + rest)[:samples]
    pipeline = dataset.transform
    fig = Figure(figsize=(1.3 * (views + 1), 1.3 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), views + 1, squeeze=False)
    for r, i in enumerate(rows):
        raw = datamodule.splits[split].x[i]
        if pipeline is None:
            images = [raw] * (views + 1)
        else:
            images = [raw] + [dataset.augment(i, epoch) for epoch in range(views)]
        for c, image in enumerate(images):
            ax = axes[r][c]
            ax.imshow(
                image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"epoch {c - 1}", fontsize=8)
        axes[r][0].set_ylabel(str(names[int(labels[i])]), fontsize=8)
    label = "train" if split == "train" else "eval"
    fig.suptitle(f"{label} augmentation" + ("" if pipeline is not None else ": none"), fontsize=10)
    fig.tight_layout()
    return fig


class TokenAugment:
    """Text augmentation on token ids: each token is deleted, swapped with its right neighbour,
    or replaced by the mask token, each with its own probability (in that order). Leading and
    trailing special tokens (``[CLS]``, ``[SEP]``) are kept, and a text never loses all its tokens.

    Args:
        mask: probability of replacing a token by ``mask_id``.
        delete: probability of deleting a token.
        swap: probability of swapping a token with the next one.
        mask_id: the mask token's id (the tokenizer's ``[MASK]``, else its unknown token).
        special_ids: ids that are never changed where they open or close a text.
    """

    def __init__(
        self, mask: float, delete: float, swap: float, mask_id: int, special_ids: set[int]
    ):
        for name, p in (("augment_mask", mask), ("augment_delete", delete), ("augment_swap", swap)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"`{name}` must be a probability in [0, 1), got {p}.")
        self.mask, self.delete, self.swap = mask, delete, swap
        self.mask_id, self.special_ids = mask_id, special_ids

    def __bool__(self) -> bool:
        return bool(self.mask or self.delete or self.swap)

    def __call__(self, ids: list[int], rng: np.random.Generator) -> list[int]:
        start, end = 0, len(ids)
        while start < end and ids[start] in self.special_ids:
            start += 1
        while end > start and ids[end - 1] in self.special_ids:
            end -= 1
        body = list(ids[start:end])
        if self.delete and len(body) > 1:
            kept = [t for t, r in zip(body, rng.random(len(body)), strict=True) if r >= self.delete]
            body = kept or body[:1]
        if self.swap:
            for j, r in enumerate(rng.random(max(len(body) - 1, 0))):
                if r < self.swap:
                    body[j], body[j + 1] = body[j + 1], body[j]
        if self.mask:
            body = [
                self.mask_id if r < self.mask else t
                for t, r in zip(body, rng.random(len(body)), strict=True)
            ]
        return list(ids[:start]) + body + list(ids[end:])
