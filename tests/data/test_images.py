import albumentations as A
import numpy as np
import pytest
import torch

from lifecycle.data import DataValidationError, ImageClassificationDataModule


def test_digits_splits_are_stratified_seeded_and_disjoint():
    dm = ImageClassificationDataModule(
        "digits", val_fraction=0.2, test_fraction=0.25, batch_size=32, seed=3
    )
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes["test"] == round(1797 * 0.25) and sum(sizes.values()) == 1797
    sources = [set(s.sources) for s in dm.splits.values()]
    assert (
        not (sources[0] & sources[1])
        and not (sources[0] & sources[2])
        and not (sources[1] & sources[2])
    )
    # stratified: every class has about the same share in every split
    for split in dm.splits.values():
        shares = np.bincount(split.y, minlength=10) / len(split)
        assert np.abs(shares - 0.1).max() < 0.02
    again = ImageClassificationDataModule("digits", val_fraction=0.2, test_fraction=0.25, seed=3)
    again.setup("fit")
    assert again.splits["val"].sources == dm.splits["val"].sources
    other = ImageClassificationDataModule("digits", val_fraction=0.2, test_fraction=0.25, seed=4)
    other.setup("fit")
    assert other.splits["val"].sources != dm.splits["val"].sources


def test_batches_are_normalized_dicts():
    dm = ImageClassificationDataModule("digits", batch_size=64)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (64, 1, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.long
    every = dm._datasets["train"].tensor
    assert abs(every.mean().item()) < 1e-3 and abs(every.std().item() - 1) < 0.01
    assert dm.input_shape == (1, 8, 8) and dm.num_classes == 10


def test_fashion_mnist_keeps_its_own_test_split_and_subsets():
    dm = ImageClassificationDataModule("fashion-mnist", val_fraction=0.1, train_subset=1000)
    dm.setup("fit")
    assert len(dm.splits["test"]) == 10000 and len(dm.splits["val"]) == 6000
    assert (
        len(dm.splits["train"]) == 1000 and np.bincount(dm.splits["train"].y).tolist() == [100] * 10
    )


def test_full_batch_means_one_batch_per_epoch():
    dm = ImageClassificationDataModule("digits", batch_size="full")
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 1 and next(iter(loader))["image"].shape[0] == len(dm.splits["train"])


def test_train_transforms_hook_applies_albumentations_to_train_only():
    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    plain = ImageClassificationDataModule("digits", batch_size=8)
    flipped = ImageClassificationDataModule("digits", batch_size=8, train_transforms=flip)
    for dm in (plain, flipped):
        dm.setup("fit")
    a, b = plain._datasets["train"][0]["image"], flipped._datasets["train"][0]["image"]
    assert torch.allclose(a.flip(-1), b)
    assert torch.equal(plain._datasets["val"][0]["image"], flipped._datasets["val"][0]["image"])
    batch = next(iter(flipped.train_dataloader()))
    assert batch["image"].shape == (8, 1, 8, 8)


def test_labels_out_of_range_name_count_and_first_row(tmp_path):
    y = np.array([0, 1, 2, 1, 0, 7, 9, 1])
    np.savez(
        tmp_path / "d.npz",
        x=np.zeros((8, 4, 4), np.uint8),
        y=y,
        class_names=np.array(["a", "b", "c"]),
    )
    dm = ImageClassificationDataModule(str(tmp_path / "d.npz"))
    with pytest.raises(
        DataValidationError,
        match=r"2 labels in the train split are outside \[0, 3\); the first is 7 at d.npz:x\[5\]",
    ):
        dm.setup("fit")


def test_empty_split_is_an_error_that_names_the_fix(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1, 0]))
    with pytest.raises(DataValidationError, match="leaves an empty split"):
        ImageClassificationDataModule(str(tmp_path / "d.npz"), val_fraction=0.1).setup("fit")


def test_bad_batch_size_is_rejected():
    with pytest.raises(ValueError, match="batch_size"):
        ImageClassificationDataModule("digits", batch_size=0)


def test_image_folder_dataset_end_to_end(write_images):
    rng = np.random.default_rng(0)
    root = write_images(
        {c: [rng.integers(0, 255, (10, 10, 3), dtype=np.uint8) for _ in range(10)] for c in "abc"}
    )
    dm = ImageClassificationDataModule(str(root), val_fraction=0.2, test_fraction=0.2, batch_size=4)
    dm.setup("fit")
    assert dm.class_names == ["a", "b", "c"] and dm.input_shape == (3, 10, 10)
    assert next(iter(dm.val_dataloader()))["image"].shape[1:] == (3, 10, 10)


def test_two_fork_workers_give_the_same_batches():
    dm = ImageClassificationDataModule("digits", batch_size=50, num_workers=2)
    dm.setup("fit")
    serial = ImageClassificationDataModule("digits", batch_size=50)
    serial.setup("fit")
    a, b = list(dm.val_dataloader()), list(serial.val_dataloader())
    assert len(a) == len(b) and all(
        torch.equal(x["image"], y["image"]) for x, y in zip(a, b, strict=True)
    )
    assert dm.val_dataloader().multiprocessing_context.get_start_method() == "fork"


def test_predict_path_reads_new_images_like_the_training_ones(write_images, tmp_path):
    rng = np.random.default_rng(0)
    new = write_images(
        {"any": [rng.integers(0, 255, (20, 12, 3), dtype=np.uint8) for _ in range(3)]},
        tmp_path / "new",
    )
    dm = ImageClassificationDataModule("digits", predict_path=str(new), batch_size=2)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert set(batch) == {"image", "index"} and batch["image"].shape == (2, 1, 8, 8)
    assert batch["index"].tolist() == [0, 1]
    assert [p.rsplit("/", 1)[1] for p in dm.predict_sources] == ["0.png", "1.png", "2.png"]
    assert len(dm.predict_dataloader().dataset) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataValidationError, match="No images"):
        ImageClassificationDataModule("digits", predict_path=str(empty)).setup("predict")
