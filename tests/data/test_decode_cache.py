"""Built-in datasets are decoded once per process and kept on disk between processes, keyed by
the file's path, size and modification time."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from lifecycle.data import datasets


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_CACHE", str(tmp_path / "cache"))
    datasets._memory_cached.cache_clear()
    yield tmp_path / "cache" / "decoded"
    datasets._memory_cached.cache_clear()


def test_an_idx_file_is_decoded_once_then_read_from_memory_and_disk(tmp_path, cache, monkeypatch):
    path = tmp_path / "images-idx3-ubyte.gz"
    first = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(path, first)
    got = datasets.read_idx(path)
    assert np.array_equal(got, first) and got.dtype == np.uint8
    assert [p.name.split(".")[0] for p in cache.iterdir()] == ["images-idx3-ubyte"]
    got[0, 0, 0] = 99  # each call gets its own copy
    assert datasets.read_idx(path)[0, 0, 0] == 0

    def no_decode(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(datasets, "_decode", no_decode)
    datasets._memory_cached.cache_clear()  # a new process: only the disk cache is left
    assert np.array_equal(datasets.read_idx(path), first)
    monkeypatch.undo()
    monkeypatch.setenv("LIFECYCLE_CACHE", str(cache.parent))

    # the file changes (size and time): it is decoded again, not read from either cache
    second = np.full((3, 3, 4), 7)
    write_idx(path, second)
    os.utime(path, ns=(1, 1))
    assert np.array_equal(datasets.read_idx(path), second)
    assert len(list(cache.iterdir())) == 2


def test_a_torn_cache_file_is_decoded_again(tmp_path, cache):
    path = tmp_path / "labels-idx1-ubyte.gz"
    write_idx(path, np.array([3, 1, 2]))
    datasets.read_idx(path)
    (entry,) = cache.iterdir()
    entry.write_bytes(b"PK\x03\x04 torn")
    datasets._memory_cached.cache_clear()
    assert datasets.read_idx(path).tolist() == [3, 1, 2]


def test_an_unwritable_cache_only_costs_the_decode(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("LIFECYCLE_CACHE", str(blocker))
    datasets._memory_cached.cache_clear()
    path = tmp_path / "x-idx1-ubyte.gz"
    write_idx(path, np.array([5, 6]))
    assert datasets.read_idx(path).tolist() == [5, 6]
    datasets._memory_cached.cache_clear()
