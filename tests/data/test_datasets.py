import gzip

import numpy as np
import pytest

from lifecycle.data.datasets import (
    DatasetNotFoundError,
    DataValidationError,
    load_csv,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    load_mnist_5k,
    load_npz,
    read_idx,
)


def test_fashion_mnist_is_the_full_real_dataset():
    data = load_fashion_mnist()
    assert data.train.x.shape == (60000, 28, 28, 1) and data.train.x.dtype == np.uint8
    assert data.test.x.shape == (10000, 28, 28, 1)
    assert np.bincount(data.train.y).tolist() == [6000] * 10
    assert data.class_names[9] == "Ankle boot"


def test_missing_builtin_names_every_place_and_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("lifecycle.data.datasets.FASHION_MNIST_SYSTEM", [tmp_path / "system"])
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "given"))
    msg = str(err.value)
    assert "'fashion-mnist'" in msg
    for place in ("given", "cache/fashion-mnist", "system"):
        assert str(tmp_path / place) in msg
    assert "apt-get install -y dataset-fashion-mnist" in msg


def test_builtin_found_in_explicit_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr("lifecycle.data.datasets.FASHION_MNIST_SYSTEM", [])
    monkeypatch.setenv("LIFECYCLE_CACHE", str(tmp_path / "cache"))
    for prefix, n in (("train", 3), ("t10k", 2)):
        images = np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2)
        header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(header + images.tobytes())
        )
        labels = np.arange(n, dtype=np.uint8)
        header = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big")
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(header + labels.tobytes())
        )
    data = load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert data.train.x.shape == (3, 2, 2, 1) and data.test.y.tolist() == [0, 1]
    assert data.train.x[1, 0, 0, 0] == 4


def test_read_idx_rejects_a_non_idx_file(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(DataValidationError, match="not an unsigned-byte IDX"):
        read_idx(path)


def test_mnist_5k_and_digits_and_diabetes():
    mnist = load_mnist_5k()
    assert (
        mnist.train.x.shape == (5000, 28, 28, 1)
        and np.bincount(mnist.train.y).tolist() == [500] * 10
    )
    assert mnist.train.x.max() == 255 and mnist.test is None
    digits = load_dataset("digits")
    assert digits.train.x.shape == (1797, 8, 8, 1) and digits.train.x.max() == 255
    diabetes = load_dataset("diabetes")
    assert diabetes.train.x.shape == (442, 10) and diabetes.feature_names[0] == "age"


def test_unknown_name_or_path_says_what_is_accepted(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(str(tmp_path / "nope"))
    assert "fashion-mnist" in str(err.value) and "nope" in str(err.value)


def test_image_folder_standardizes_channels_and_reads_own_test_split(write_images, tmp_path):
    rng = np.random.default_rng(0)
    grey = lambda: rng.integers(0, 255, (6, 5), dtype=np.uint8)  # noqa: E731
    rgb = lambda: rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)  # noqa: E731
    root = tmp_path / "ds"
    write_images({"cat": [grey(), rgb()], "dog": [grey()]}, root / "train")
    write_images({"cat": [grey()], "dog": [rgb()]}, root / "test")
    data = load_image_folder(root)
    assert data.class_names == ["cat", "dog"]
    assert data.train.x.shape == (3, 6, 5, 3)  # mixed grey and RGB -> RGB
    assert data.test.y.tolist() == [0, 1]
    assert data.train.sources[0].endswith("cat/0.png")


def test_image_folder_mixed_sizes_error_names_the_file_and_fix(write_images):
    root = write_images(
        {
            "a": [np.zeros((8, 8), np.uint8)] * 3,
            "b": [np.zeros((8, 8), np.uint8), np.zeros((5, 7), np.uint8)],
        }
    )
    with pytest.raises(DataValidationError) as err:
        load_image_folder(root)
    msg = str(err.value)
    assert "b/1.png" in msg and "7x5" in msg and "image_size" in msg
    resized = load_image_folder(root, image_size=(8, 8))
    assert resized.train.x.shape == (5, 8, 8, 1)


def test_image_folder_corrupt_file_is_named(write_images):
    root = write_images({"a": [np.zeros((4, 4), np.uint8)]})
    (root / "a" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DataValidationError, match="broken.png"):
        load_image_folder(root)


def test_npz_layouts_and_missing_keys(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(
        path, x=np.random.rand(4, 3, 6, 6).astype(np.float32), y=np.arange(4)
    )  # N, C, H, W floats in [0, 1]
    data = load_npz(path)
    assert data.train.x.shape == (4, 6, 6, 3) and data.train.x.dtype == np.uint8
    np.savez(path, images=np.zeros((2, 3, 3)))
    with pytest.raises(DataValidationError, match=r"lacks array\(s\) \['x', 'y'\]"):
        load_npz(path)


def test_npz_nan_images_are_reported_with_the_row(tmp_path):
    x = np.zeros((5, 4, 4), np.float32)
    x[3, 1, 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(5))
    with pytest.raises(
        DataValidationError, match="1 images hold NaN or Inf values; the first is row 3"
    ):
        load_npz(tmp_path / "d.npz")


def test_csv_reads_features_and_names_bad_cells(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,yes\n3,4,no\n")
    data = load_csv(path)
    assert data.train.x.tolist() == [[1, 2], [3, 4]] and data.train.y.tolist() == ["yes", "no"]
    assert data.feature_names == ["a", "b"]
    path.write_text("a,b,label\n1,2,yes\n3,oops,no\n")
    with pytest.raises(DataValidationError, match=r"line 3, column 'b': 'oops' is not a number"):
        load_csv(path)
    with pytest.raises(DataValidationError, match="target column 'price' not found"):
        load_csv(path, target="price")


def test_npz_float_images_get_one_scale_for_x_and_x_test(tmp_path):
    path = tmp_path / "d.npz"
    x = np.full((4, 3, 3), 0.5, np.float32)
    np.savez(path, x=x, y=np.arange(4), x_test=x[:2], y_test=np.arange(2))
    data = load_npz(path)
    assert data.train.x.max() == data.test.x.max() == 128
    np.savez(path, x=x * 200, y=np.arange(4), x_test=x[:2], y_test=np.arange(2))
    with pytest.raises(DataValidationError, match=r"x_test lies in \[0, 1\].*x goes up to 100"):
        load_npz(path)  # it was x_test scaled by 255 and x by 1


@pytest.mark.parametrize(
    ("value", "what"), [(-0.5, "negative values"), (300.0, "values above 255")]
)
def test_npz_image_values_out_of_range_are_refused_not_clipped(tmp_path, value, what):
    x = np.full((6, 3, 3), 0.25, np.float32)
    x[2, 1, 1] = x[4, 0, 0] = value
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(6))
    with pytest.raises(
        DataValidationError, match=rf"x: 2 of 6 images hold {what} \(the first is row 2.*Fix:"
    ):
        load_npz(tmp_path / "d.npz")


def test_non_image_files_in_an_image_folder_are_listed(write_images, caplog):
    import logging

    root = write_images({"a": [np.zeros((4, 4), np.uint8)] * 2, "b": [np.zeros((4, 4), np.uint8)]})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "labels.csv").write_text("file,label\n")
    with caplog.at_level(logging.WARNING, logger="lifecycle.data.datasets"):
        data = load_image_folder(root)
    assert len(data.train) == 3
    assert "skipped 2 files that are not images in a class folder" in caplog.text
    assert "a/notes.txt" in caplog.text and "labels.csv" in caplog.text
    caplog.clear()
    from lifecycle.data.datasets import image_files

    with caplog.at_level(logging.WARNING, logger="lifecycle.data.datasets"):
        assert len(image_files(root)) == 3  # a predict_path folder
    assert "skipped 2 files that are not images (image types" in caplog.text


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_empty_or_truncated_image_files_are_errors_naming_the_file(write_images, damage):
    import io

    from PIL import Image

    image = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    root = write_images({"a": [image], "b": [image]})
    png = io.BytesIO()
    Image.fromarray(image).save(png, "PNG")
    data = b"" if damage == "empty" else png.getvalue()[: len(png.getvalue()) // 2]
    (root / "b" / "bad.png").write_bytes(data)
    with pytest.raises(DataValidationError, match=r"Cannot decode image .*b/bad.png"):
        load_image_folder(root)
