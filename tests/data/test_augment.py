"""Augmentation pipelines from config: presets, names with arguments, clear errors, and the
pipelines a checkpoint keeps."""

import json

import albumentations as A
import numpy as np
import pytest

from lifecycle.data import ImageClassificationDataModule
from lifecycle.data.augment import (
    PRESETS,
    AugmentationError,
    build_pipeline,
    check_keeps_shape,
    pipeline_from_dict,
    pipeline_to_dict,
)
from tests.conftest import quiet_trainer

GREY = np.random.default_rng(0).integers(0, 255, (28, 28, 1), dtype=np.uint8)
RGB = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "none"])
def test_presets_keep_small_grey_and_rgb_images_and_change_them(preset):
    pipeline = build_pipeline(preset, seed=0)
    for image in (GREY, RGB):
        check_keeps_shape(pipeline, image, "train_transforms")
        outs = [pipeline(image=image)["image"] for _ in range(8)]
        assert all(o.shape[:2] == image.shape[:2] and o.dtype == np.uint8 for o in outs)
        assert sum(not np.array_equal(o.reshape(image.shape), image) for o in outs) >= 4
    assert build_pipeline("none") is None and build_pipeline(None) is None


def test_names_with_arguments_from_yaml_shapes():
    pipeline = build_pipeline(["HorizontalFlip", {"Affine": {"rotate": [-10, 10], "p": 0.7}}])
    flip, affine = pipeline.transforms
    assert isinstance(flip, A.HorizontalFlip) and flip.p == 0.5
    assert isinstance(affine, A.Affine) and affine.p == 0.7 and affine.rotate == (-10.0, 10.0)


def test_same_seed_same_samples_and_serialization_round_trip():
    a, b = build_pipeline("heavy", seed=7), build_pipeline("heavy", seed=7)
    assert all(np.array_equal(a(image=RGB)["image"], b(image=RGB)["image"]) for _ in range(5))
    restored = pipeline_from_dict(json.loads(json.dumps(pipeline_to_dict(a))))
    restored.set_random_seed(3)
    a.set_random_seed(3)
    assert all(
        np.array_equal(a(image=GREY)["image"], restored(image=GREY)["image"]) for _ in range(5)
    )


def test_unknown_names_suggest_the_closest():
    with pytest.raises(
        AugmentationError,
        match=r"train_transforms\[0\]: unknown .*'HorizntalFlip'.*Did you mean HorizontalFlip",
    ):
        build_pipeline(["HorizntalFlip"], where="train_transforms")
    with pytest.raises(AugmentationError, match="'medum' is neither a preset.*Did you mean medium"):
        build_pipeline("medum")


def test_wrong_arguments_name_the_transform_and_what_it_takes():
    with pytest.raises(
        AugmentationError,
        match=r"\[0\]: HorizontalFlip has no argument\(s\) \['prob'\]. Fix: use \['p'\]",
    ):
        build_pipeline([{"HorizontalFlip": {"prob": 0.5}}])
    with pytest.raises(
        AugmentationError,
        match=r"Affine\(rotate='lots'\) is invalid.*help\(albumentations.Affine\)",
    ):
        build_pipeline([{"Affine": {"rotate": "lots"}}])
    with pytest.raises(AugmentationError, match="one-key mapping"):
        build_pipeline([{"HorizontalFlip": {}, "Affine": {}}])


def test_a_shape_changing_transform_is_an_error_naming_it_and_the_fix():
    pipeline = build_pipeline(
        ["HorizontalFlip", {"RandomResizedCrop": {"size": [16, 16], "p": 0.1}}]
    )
    with pytest.raises(
        AugmentationError,
        match=r"RandomResizedCrop turns a 28x28 image .* into 16x16.*size \[28, 28\]",
    ):
        check_keeps_shape(pipeline, GREY, "train_transforms")
    dm = ImageClassificationDataModule(
        "digits", train_transforms=[{"Resize": {"height": 4, "width": 4}}]
    )
    with pytest.raises(AugmentationError, match="Resize turns a 8x8 image"):
        dm.setup()


def test_checkpoint_keeps_the_pipelines_and_test_uses_them(tmp_path):
    import lightning as L
    import torch

    from lifecycle.models import MLP
    from lifecycle.stages import ClassificationModule

    flip = [{"HorizontalFlip": {"p": 1.0}}]  # deterministic, and it matters for digits
    dm = ImageClassificationDataModule(
        "digits", train_transforms="light", eval_transforms=flip, batch_size=64
    )
    torch.manual_seed(0)
    model = ClassificationModule(MLP(in_features=64, hidden=[64]), num_classes=10)
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    trainer = quiet_trainer(tmp_path, max_epochs=3, logger=logger, enable_checkpointing=True)
    trainer.fit(model, datamodule=dm)
    flipped = trainer.test(model, datamodule=dm, verbose=False)[0]["test/accuracy"]
    saved = json.loads((tmp_path / "lightning_logs" / "version_0" / "transforms.json").read_text())
    assert (
        saved["eval_transforms"]["transform"]["transforms"][0]["__class_fullname__"]
        == "HorizontalFlip"
    )

    plain = ImageClassificationDataModule("digits", batch_size=64)  # the user repeats no transform
    unflipped = quiet_trainer(tmp_path).test(model, datamodule=plain, verbose=False)[0][
        "test/accuracy"
    ]
    ckpt = trainer.checkpoint_callback.best_model_path
    # weights_only=False: a module built in Python keeps its optimizer class in the hyperparameters
    again = quiet_trainer(tmp_path).test(
        model, datamodule=plain, ckpt_path=ckpt, verbose=False, weights_only=False
    )
    assert plain.pipelines["eval"] is not None  # restored from the checkpoint
    assert again[0]["test/accuracy"] == pytest.approx(flipped)
    assert unflipped != pytest.approx(flipped)


def test_augmented_samples_repeat_across_runs_and_workers_and_change_across_epochs():
    import torch

    def first_batches(workers, epoch=0):
        dm = ImageClassificationDataModule(
            "digits", train_transforms="heavy", batch_size=32, num_workers=workers
        )
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)  # what Lightning does before each epoch
        batches = iter(loader)
        return [next(batches) for _ in range(3)]

    base = first_batches(0)
    for other in (first_batches(0), first_batches(2)):
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(base, other, strict=True))
    later = first_batches(0, epoch=1)
    assert not torch.equal(base[0]["label"], later[0]["label"])  # a new order
    dm = ImageClassificationDataModule("digits", train_transforms="heavy")
    dm.setup()
    dataset = dm._datasets["train"]
    assert np.array_equal(dataset.augment(5, epoch=1), dataset.augment(5, epoch=1))
    assert not np.array_equal(dataset.augment(5, epoch=1), dataset.augment(5, epoch=2))


def test_preview_grid_shows_originals_then_each_epochs_augmentation():
    from lifecycle.data.augment import preview

    dm = ImageClassificationDataModule("digits", train_transforms="medium")
    fig = preview(dm, samples=4, views=3)
    axes = fig.axes
    assert len(axes) == 4 * 4
    assert [a.get_title() for a in axes[:4]] == ["original", "epoch 0", "epoch 1", "epoch 2"]
    first_class = int(np.flatnonzero(dm.splits["train"].y == 0)[0])
    shown = axes[0].get_images()[0].get_array()
    assert np.array_equal(np.asarray(shown), dm.splits["train"].x[first_class][..., 0])
    augmented = np.asarray(axes[1].get_images()[0].get_array())
    assert np.array_equal(augmented, dm._datasets["train"].augment(first_class, 0)[..., 0])
    assert [a.get_ylabel() for a in axes[::4]] == ["0", "1", "2", "3"]  # one class per row


def test_token_augment_masks_deletes_and_swaps_but_keeps_the_ends():
    from lifecycle.data.augment import TokenAugment

    ids = [2] + list(range(10, 40)) + [3]
    rng = np.random.default_rng(0)
    masked = TokenAugment(0.5, 0, 0, mask_id=4, special_ids={2, 3})(ids, rng)
    assert len(masked) == len(ids) and masked[0] == 2 and masked[-1] == 3
    assert 5 <= masked.count(4) <= 25 and all(m in (4, t) for m, t in zip(masked, ids, strict=True))
    deleted = TokenAugment(0, 0.5, 0, 4, {2, 3})(ids, rng)
    assert deleted[0] == 2 and deleted[-1] == 3 and 7 <= len(deleted) - 2 <= 25
    assert deleted[1:-1] == sorted(deleted[1:-1])  # what is left keeps its order
    swapped = TokenAugment(0, 0, 0.3, 4, {2, 3})(ids, rng)
    assert sorted(swapped) == sorted(ids) and swapped != ids and swapped[0] == 2
    assert TokenAugment(0, 0.99, 0, 4, {2, 3})([2, 11, 3], rng) == [2, 11, 3]  # never empty
    with pytest.raises(ValueError, match="`augment_swap` must be a probability"):
        TokenAugment(0, 0, 1.5, 4, set())


def test_text_augmentation_is_seeded_per_text_and_epoch_and_training_only(tmp_path):
    import torch

    from lifecycle.data import TextClassificationDataModule

    path = tmp_path / "t.csv"
    path.write_text(
        "text,label\n" + "".join(f"text number {i} has words,{i % 2}\n" for i in range(80))
    )

    def data(workers=0):
        dm = TextClassificationDataModule(
            str(path), vocab_size=300, min_frequency=1, batch_size=16, num_workers=workers,
            augment_mask=0.3, augment_swap=0.2,
        )  # fmt: skip
        dm.setup()
        return dm

    a, b = data(), data(workers=2)
    batch_a, batch_b = next(iter(a.train_dataloader())), next(iter(b.train_dataloader()))
    assert torch.equal(batch_a["input_ids"], batch_b["input_ids"])
    mask_id = a.tokenizer.mask_token_id
    assert (batch_a["input_ids"] == mask_id).any()
    dataset = a._datasets["train"]
    assert dataset.row(3, epoch=0) == dataset.row(3, epoch=0) != dataset.row(3, epoch=1)
    assert not (next(iter(a.val_dataloader()))["input_ids"] == mask_id).any()
    with pytest.raises(ValueError, match="augment_mask"):
        TextClassificationDataModule(str(path), augment_mask=1.0)


def test_multiple_views_are_independent_and_view_0_is_the_image():
    import torch

    dm = ImageClassificationDataModule("digits", train_transforms="heavy", views=3, batch_size=16)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["views"].shape == (16, 3, 1, 8, 8)
    assert torch.equal(batch["views"][:, 0], batch["image"])
    assert not torch.equal(batch["views"][:, 1], batch["views"][:, 2])
    single = ImageClassificationDataModule("digits", train_transforms="heavy", batch_size=16)
    single.setup()
    assert torch.equal(next(iter(single.train_dataloader()))["image"], batch["image"])
    # validation: the plain image, and fixed views of it (a contrastive loss needs them)
    val = next(iter(dm.val_dataloader()))
    assert torch.equal(val["image"], dm._datasets["val"].tensor[:16])
    assert val["views"].shape == (16, 3, 1, 8, 8)
    assert torch.equal(val["views"], next(iter(dm.val_dataloader()))["views"])
    with pytest.raises(ValueError, match="several views need `train_transforms`"):
        ImageClassificationDataModule("digits", views=2)


def test_albumentations_warnings_reach_the_user_and_presets_raise_none():
    import warnings

    with pytest.warns(UserWarning, match="ShiftScaleRotate is a special case of Affine"):
        build_pipeline(["ShiftScaleRotate"])  # was muted, with every other warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for preset in PRESETS:
            build_pipeline(preset, seed=0)
