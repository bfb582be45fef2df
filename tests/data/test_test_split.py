"""The test split does not move when a cleaned manifest is applied: a baseline and a cleaned run
are scored on the very same records, with their original labels."""

import csv

import numpy as np

from lifecycle.data import ImageClassificationDataModule, TextClassificationDataModule
from lifecycle.data.cleaning.manifest import ManifestRow, write_manifest


def cleaned_manifest(path, sources, labels, names, test_sources=(), test_labels=()):
    """A manifest as `lifecycle clean` writes one: every 7th record dropped, every 5th
    relabeled, every 3rd down-weighted; plus relabeled rows for ``test_sources`` (as a manifest
    written before the test split was held out of cleaning would list them)."""
    index = {name: i for i, name in enumerate(names)}
    rows = [
        ManifestRow(s, names[(index[y] + 1) % len(names)] if i % 5 == 0 else y,
                    0.2 if i % 3 == 0 else 1.0, y)
        for i, (s, y) in enumerate(zip(sources, labels, strict=True))
        if i % 7
    ]  # fmt: skip
    rows += [
        ManifestRow(s, names[(index[y] + 1) % len(names)], 1.0, y)
        for s, y in zip(test_sources, test_labels, strict=True)
    ]
    return write_manifest(rows, path)


def test_image_test_split_is_the_same_for_a_baseline_and_a_cleaned_run(tmp_path):
    base = ImageClassificationDataModule("digits", seed=0)
    base.setup()
    names = base.class_names
    records = ImageClassificationDataModule("digits", seed=0).cleaning_records()
    test = base.splits["test"]
    # cleaning never sees the test records: they are its leakage reference only
    assert not set(records.sources) & set(test.sources)
    assert records.test_sources == test.sources
    manifest = cleaned_manifest(
        tmp_path / "manifest.csv", records.sources, [names[y] for y in records.labels], names,
        test.sources[:20], [names[y] for y in test.y[:20]],
    )  # fmt: skip
    cleaned = ImageClassificationDataModule("digits", seed=0, cleaned_manifest=str(manifest))
    cleaned.setup()
    assert cleaned.splits["test"].sources == test.sources
    assert cleaned.splits["test"].y.tolist() == test.y.tolist()
    assert np.array_equal(cleaned.splits["test"].x, test.x)
    used = {s for name in ("train", "val") for s in cleaned.splits[name].sources}
    assert not used & set(test.sources)
    assert len(used) == len([i for i in range(len(records)) if i % 7])  # the manifest applied


def write_texts(path, n=150):
    words = {"pos": ["great", "love", "happy"], "neg": ["awful", "hate", "sad"]}
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = "pos" if i % 2 else "neg"
            writer.writerow([f"text {i} is {words[label][i % 3]}", label])
        writer.writerow(["text 3 is happy", "pos"])  # a duplicate: one copy is kept
    return path


def test_text_test_split_is_the_same_for_a_baseline_and_a_cleaned_run(tmp_path):
    path = write_texts(tmp_path / "t.csv")
    kwargs = dict(vocab_size=200, min_frequency=1, seed=0)
    base = TextClassificationDataModule(str(path), **kwargs)
    base.setup()
    test = base.texts["test"]
    records = TextClassificationDataModule(str(path), **kwargs).cleaning_records()
    assert not set(records.sources) & set(test.sources)
    assert records.test_sources == test.sources
    names = records.class_names
    manifest = cleaned_manifest(
        tmp_path / "manifest.csv", records.sources, [names[y] for y in records.labels], names,
        test.sources[:5], test.labels[:5],
    )  # fmt: skip
    cleaned = TextClassificationDataModule(str(path), cleaned_manifest=str(manifest), **kwargs)
    cleaned.setup()
    assert cleaned.texts["test"].sources == test.sources
    assert cleaned.texts["test"].labels == test.labels
    assert cleaned.texts["test"].texts == test.texts
    used = {s for name in ("train", "val") for s in cleaned.texts[name].sources}
    assert not used & set(test.sources)
    assert len(used) == len([i for i in range(len(records)) if i % 7])


def test_records_the_cleaning_run_never_saw_are_named_when_left_out(tmp_path, caplog):
    import logging

    from lifecycle.data.validation import DataIssue, write_issues

    records = ImageClassificationDataModule("digits", seed=0).cleaning_records()
    names = records.class_names
    manifest = cleaned_manifest(
        tmp_path / "manifest.csv", records.sources, [names[y] for y in records.labels], names
    )
    dropped = [DataIssue(s, "label issue", "dropped") for s in records.sources[::7]]
    write_issues(dropped, tmp_path / "removed.csv")  # `lifecycle clean` writes it beside
    with caplog.at_level(logging.WARNING, logger="lifecycle.data.images"):
        ImageClassificationDataModule("digits", seed=0, cleaned_manifest=str(manifest)).setup()
    assert "neither in the cleaned manifest" not in caplog.text  # each is kept or removed
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lifecycle.data.images"):
        ImageClassificationDataModule("digits", seed=1, cleaned_manifest=str(manifest)).setup()
    assert "neither in the cleaned manifest nor in its removed.csv" in caplog.text
    assert "Fix: clean with this run's `seed` and `test_fraction`" in caplog.text
