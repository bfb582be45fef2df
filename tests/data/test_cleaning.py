"""The cleaning stage: confident learning, duplicates, K-fold probabilities, manifest, report."""

import csv
import json

import numpy as np
import pytest
import torch

from lifecycle.data import ImageClassificationDataModule, TextClassificationDataModule
from lifecycle.data.cleaning import (
    DataCleaner,
    apply_manifest,
    exact_duplicates,
    find_label_issues,
    near_duplicate_image_pairs,
    near_duplicate_text_pairs,
    read_manifest,
    write_manifest,
)
from lifecycle.data.cleaning.duplicates import groups_from_pairs
from lifecycle.data.cleaning.kfold import check_folds
from lifecycle.data.cleaning.label_issues import LabelIssueError, confident_joint
from lifecycle.data.cleaning.manifest import ManifestRow
from lifecycle.data.datasets import DatasetNotFoundError, DataValidationError, load_fashion_mnist


def noisy_probabilities(n=3000, k=5, noise=0.1, seed=0):
    """A model 95% right on true labels, and labels of which ``noise`` were flipped at random."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    right = rng.random(n) < 0.95
    logits[np.arange(n), np.where(right, true, rng.integers(0, k, n))] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    flipped = rng.random(n) < noise
    labels = np.where(flipped, (true + rng.integers(1, k, n)) % k, true)
    return labels, probs, flipped


def test_confident_learning_finds_flipped_labels_and_estimates_the_noise():
    labels, probs, flipped = noisy_probabilities()
    issues = find_label_issues(labels, probs)
    tp = (issues.mask & flipped).sum()
    precision, recall = tp / issues.mask.sum(), tp / flipped.sum()
    # the model's own 5% of errors look like label errors: precision is bounded by them
    assert precision > 0.6 and recall > 0.8, (precision, recall)
    assert abs(issues.noise_rate - flipped.mean()) < 0.05
    # most likely wrong first, never the given label suggested
    scores = issues.self_confidence[issues.indices]
    assert np.all(np.diff(scores) >= 0)
    assert not np.any(issues.suggested[issues.mask] == labels[issues.mask])
    # with the flipped records left out, about the model's error rate is flagged
    clean = find_label_issues(labels[~flipped], probs[~flipped])
    assert clean.mask.mean() < 0.06


def test_max_self_confidence_acts_only_on_the_clearest_label_issues():
    from lifecycle.data.cleaning.records import CleaningRecords

    labels, probs, flipped = noisy_probabilities()
    records = CleaningRecords("image", np.zeros((len(labels), 2, 2, 1)), labels,
                              [f"r{i}" for i in range(len(labels))], list("abcde"))  # fmt: skip
    every, _ = DataCleaner(label_issues="drop").label_findings(records, probs)
    cut, _ = DataCleaner(label_issues="drop", max_self_confidence=0.05).label_findings(
        records, probs
    )
    # the same issues are listed either way; only those at or below the cut are acted on
    assert [f.index for f in cut] == [f.index for f in every]
    assert all(f.action == "dropped" for f in every)
    dropped = np.array([f.index for f in cut if f.action == "dropped"])
    assert all((f.score <= 0.05) == (f.action == "dropped") for f in cut)
    assert 0 < len(dropped) < len(cut)
    # the clearest mistakes are more often real ones
    precision = lambda idx: flipped[idx].mean()  # noqa: E731
    assert precision(dropped) > precision(np.array([f.index for f in every]))
    with pytest.raises(ValueError, match="`max_self_confidence` must be in \\[0, 1\\]"):
        DataCleaner(max_self_confidence=5)


def test_confident_joint_counts_records_per_label_when_calibrated():
    labels, probs, _ = noisy_probabilities(n=500)
    joint = confident_joint(labels, probs)
    assert np.allclose(joint.sum(axis=1), np.bincount(labels, minlength=5))


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        (np.array([0, 1]), np.full((3, 2), 0.5), "one row per label"),
        (np.array([0, 2]), np.full((2, 2), 0.5), "integers in \\[0, 2\\)"),
        (np.array([0, 1]), np.array([[0.5, 0.6], [0.5, 0.5]]), "sum to 1"),
        (np.array([0, 1]), np.array([[np.nan, 1], [0.5, 0.5]]), "NaN"),
    ],
)
def test_label_issues_reject_bad_input_by_name(labels, probs, message):
    with pytest.raises(LabelIssueError, match=message):
        find_label_issues(labels, probs)


def test_folds_need_two_classes_and_enough_records_per_class():
    with pytest.raises(DataValidationError, match="one label \\(cat\\)"):
        check_folds(np.zeros(10, dtype=int), 5, ["cat", "dog"])
    labels = np.array([0] * 10 + [1] * 3)
    with pytest.raises(DataValidationError, match="dog \\(3\\).*lower `folds` to at most 3"):
        check_folds(labels, 5, ["cat", "dog"])
    check_folds(labels, 3, ["cat", "dog"])


def test_clean_folds_train_with_the_strategy_preset_of_the_recipe(monkeypatch):
    import lightning as L

    from lifecycle.cli import CleanCLI, fold_trainer_kwargs, recipe_cli
    from lifecycle.data.cleaning.kfold import out_of_fold_probabilities
    from lifecycle.errors import ConfigError
    from lifecycle.models import MLP
    from lifecycle.stages import ClassificationModule
    from lifecycle.training.strategies import DDPStrategy

    recipe = ["--config", "recipes/fashion_mnist/clean.yaml", "--data.init_args.dataset", "digits",
              "--trainer.accelerator", "cpu", "--trainer.devices", "1"]  # fmt: skip
    cli = recipe_cli(CleanCLI, [*recipe, "--config", "recipes/strategies/ddp.yaml"])
    kwargs = fold_trainer_kwargs(cli)
    assert isinstance(kwargs["strategy"], DDPStrategy)
    assert kwargs["strategy"] is not cli.trainer.strategy  # fresh, not bound to the CLI's Trainer
    assert kwargs["max_epochs"] == 3 and kwargs["precision"] == "bf16-mixed"

    # each fold's Trainer is built with (a copy of) that strategy; recorded, then run on one
    # process so the test does not start a process group
    built = []

    class RecordingTrainer(L.Trainer):
        def __init__(self, strategy="auto", **kw):
            built.append(strategy)
            super().__init__(**{**kw, "strategy": "auto", "devices": 1, "precision": "32-true"})

    monkeypatch.setattr(L, "Trainer", RecordingTrainer)
    dm = ImageClassificationDataModule("digits", batch_size=32, num_workers=0)
    records = dm.cleaning_records()
    records = records.take(
        np.concatenate([np.flatnonzero(records.labels == c)[:9] for c in range(10)])
    )
    model = ClassificationModule(MLP(in_features=64, hidden=[16]), num_classes=10)
    fold_kwargs = {**kwargs, "max_epochs": 1, "enable_progress_bar": False}
    probs = out_of_fold_probabilities(model, dm, records, folds=2, trainer_kwargs=fold_kwargs)
    assert [type(s) for s in built] == [DDPStrategy, DDPStrategy]
    assert built[0] is not built[1] and kwargs["strategy"] not in built
    assert probs.shape == (90, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)

    spawned = recipe_cli(CleanCLI, [*recipe, "--trainer.strategy", "ddp_spawn"])
    with pytest.raises(ConfigError, match="`trainer.strategy: ddp_spawn` cannot train the clean"):
        fold_trainer_kwargs(spawned)  # its held-out predictions would stay in the spawned ranks


@pytest.mark.slow
def test_kfold_under_ddp_gives_every_rank_every_held_out_probability_once(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}
    script = REPO / "tests" / "evaluation" / "kfold_fit.py"
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    # 89 records: each fold's 44 or 45 held out split 23/22 over the ranks, gathered on both
    assert rank0.shape == (89, 10) and np.array_equal(rank0, rank1)
    assert np.allclose(rank0.sum(1), 1, atol=1e-5)


def test_exact_duplicates_of_images_and_of_texts_up_to_case_and_spacing():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 8, 8, 1), dtype=np.uint8)
    images[4] = images[1]
    assert exact_duplicates(images) == [[1, 4]]
    texts = ["Hello  World", "other", "hello world", "HELLO WORLD ", "hello, world"]
    assert exact_duplicates(texts) == [[0, 2, 3]]
    assert groups_from_pairs(5, [(3, 1), (1, 4)]) == [[1, 3, 4]]


@pytest.fixture(scope="module")
def fashion_with_copies():
    """2,000 Fashion-MNIST images and 60 near copies of some (shifted by 1-2 px or noised)."""
    x = load_fashion_mnist().train.x[:2000]
    rng = np.random.default_rng(0)
    src = rng.choice(len(x), 60, replace=False)
    copies = []
    for k, s in enumerate(src):
        img = x[s, ..., 0].astype(np.float32)
        if k % 2:
            img = img + rng.normal(0, 12, img.shape)
        else:
            img = np.roll(img, (int(rng.integers(1, 3)), -int(rng.integers(0, 3))), axis=(0, 1))
        copies.append(np.clip(img, 0, 255).round().astype(np.uint8)[..., None])
    truth = {(int(s), len(x) + k) for k, s in enumerate(src)}
    return np.concatenate([x, np.stack(copies)]), truth


def test_near_duplicate_images_are_found_with_high_precision(fashion_with_copies):
    images, truth = fashion_with_copies
    found = {(a, b) for a, b, _ in near_duplicate_image_pairs(images)}
    assert len(found & truth) / len(truth) >= 0.95
    assert len(found & truth) / len(found) >= 0.9


def test_near_duplicate_texts_by_minhash_lsh():
    base = [
        "the flight was delayed three hours and nobody told us anything at the gate",
        "loving the new phone, the battery lasts all day and the camera is great",
        "customer service hung up on me twice today, never flying with them again",
        "what a beautiful morning for a run along the river before work",
    ]
    texts = base + [
        base[0] + " #fail",
        base[1].replace("great", "grand"),
        "completely different words about the weather in spring and summer",
    ]
    pairs = {(a, b) for a, b, _ in near_duplicate_text_pairs(texts, threshold=0.7)}
    assert pairs == {(0, 4), (1, 5)}


def test_manifest_round_trip_and_errors(tmp_path):
    path = write_manifest(
        [ManifestRow("a.png", "cat", 1.0, "cat"), ManifestRow("c.png", "dog", 0.2, "cat")],
        tmp_path / "manifest.csv",
    )
    manifest = read_manifest(path)
    kept, labels, weights = apply_manifest(
        ["a.png", "b.png", "c.png"], ["cat", "dog"], manifest, "d"
    )
    assert kept.tolist() == [0, 2] and labels.tolist() == [0, 1]
    assert weights.tolist() == pytest.approx([1.0, 0.2])
    with pytest.raises(DataValidationError, match="1 records that other does not hold.*'c.png'"):
        apply_manifest(["a.png", "b.png"], ["cat", "dog"], manifest, "other")
    with pytest.raises(DataValidationError, match="labels \\['dog'\\] that are not classes"):
        apply_manifest(["a.png", "c.png"], ["cat"], manifest, "d")
    path.write_text("source,label,weight\na.png,cat,heavy\n")
    with pytest.raises(DataValidationError, match="line 2: weight 'heavy'"):
        read_manifest(path)
    path.write_text("source,weight\na.png,1\n")
    with pytest.raises(DataValidationError, match="lacks column\\(s\\) \\['label'\\]"):
        read_manifest(path)
    with pytest.raises(DatasetNotFoundError, match="lifecycle clean"):
        read_manifest(tmp_path / "missing.csv")


def test_weighted_loss_ignores_zero_weight_records():
    from lifecycle.models import MLP
    from lifecycle.stages import ClassificationModule

    model = ClassificationModule(MLP(4, [8]), num_classes=3)
    logits = torch.randn(4, 3)
    target = torch.tensor([0, 1, 2, 1])
    weighted = model._loss(logits, target, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert weighted.item() == pytest.approx(model._loss(logits[:2], target[:2]).item(), rel=1e-5)


def blobs(n_per_class, rng, size=16):
    """Two classes of easy grey images: a bright square top-left (a) or bottom-right (b)."""
    out = {"a": [], "b": []}
    for name, (r, c) in (("a", (2, 2)), ("b", (9, 9))):
        for _ in range(n_per_class):
            img = rng.integers(0, 40, (size, size)).astype(np.uint8)
            img[r + rng.integers(0, 2) : r + 5, c + rng.integers(0, 2) : c + 5] = 220
            out[name].append(img)
    return out


@pytest.mark.slow
def test_cleaning_stage_end_to_end_on_an_image_folder(tmp_path, write_images):
    from lifecycle.models import SmallCNN
    from lifecycle.stages import ClassificationModule

    rng = np.random.default_rng(0)
    classes = blobs(66, rng)
    # 6 mislabeled images: class b pictures in folder a
    classes["a"] += classes["b"][60:]
    del classes["b"][60:]
    classes["b"].append(classes["b"][10].copy())  # an exact duplicate
    # a test split of its own, so that every planted problem is in the records cleaning sees
    # (a test split carved from the folder is held out of cleaning)
    root = write_images(classes, tmp_path / "images" / "train").parent
    write_images(blobs(8, np.random.default_rng(1)), root / "test")
    (root / "train" / "a" / "broken.png").write_bytes(b"not a png")
    from PIL import Image

    Image.fromarray(np.stack([classes["b"][20]] * 3, axis=-1)).save(
        root / "train" / "b" / "rgb.png"
    )
    dm = ImageClassificationDataModule(str(root), batch_size=16, num_workers=0)
    model = ClassificationModule(
        SmallCNN(in_channels=1, channels=[8], convs_per_block=1, pool_size=2, hidden=16),
        num_classes=2,
    )
    cleaner = DataCleaner(folds=3, label_issues="relabel")
    trainer = {"max_epochs": 10, "accelerator": "cpu", "enable_progress_bar": False}
    result = cleaner.run(dm, model, trainer, tmp_path / "out")
    out = tmp_path / "out"
    removed = list(csv.DictReader(open(out / "removed.csv")))
    reasons = {
        (r["source"].rsplit("/", 2)[-2] + "/" + r["source"].rsplit("/", 1)[-1], r["reason"])
        for r in removed
    }
    assert ("a/broken.png", "unreadable image") in reasons
    assert ("b/60.png", "exact duplicate") in reasons
    # converted to grey like the others, then found to be a copy
    assert ("b/rgb.png", "channels differ from the others") in reasons
    assert ("b/rgb.png", "exact duplicate") in reasons
    relabeled = {r["source"].rsplit("/", 1)[-1] for r in removed if r["action"] == "relabeled"}
    planted = {f"{66 + i}.png" for i in range(6)}
    assert len(relabeled & planted) >= 4 and len(relabeled - planted) <= 2, relabeled
    manifest = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(manifest) == len(result.kept) == 66 + 6 + 60  # all but the copy and the broken file
    summary = json.loads((out / "report.json").read_text())
    assert summary["unreadable"] == 1 and summary["out_of_fold_accuracy"] > 0.85
    report = (out / "report.md").read_text()
    assert (
        "![label issue](flagged_label_issue.png)" in report and (out / "class_balance.png").exists()
    )
    # a DataModule trains on exactly the manifest's records and labels
    cleaned = ImageClassificationDataModule(
        str(root), cleaned_manifest=str(out / "manifest.csv"), val_fraction=0.2, test_fraction=0.2
    )
    with pytest.raises(DataValidationError, match="Cannot decode"):
        ImageClassificationDataModule(
            str(root)
        ).setup()  # without cleaning, the broken file stops it
    cleaned.setup()
    used = sum(len(s) for s in cleaned.splits.values())
    assert used == len(manifest) + 16  # and the folder's own 16 test images, never cleaned
    assert all("/test/" in s for s in cleaned.splits["test"].sources)
    sources = [s for split in cleaned.splits.values() for s in split.sources]
    b_in_a = [s for s in sources if s.endswith(tuple(f"/a/{p}" for p in planted))]
    labels = {
        s: y
        for split in cleaned.splits.values()
        for s, y in zip(split.sources, split.y, strict=True)
    }
    assert sum(labels[s] == 1 for s in b_in_a) == len(relabeled & planted)  # relabeled to b


@pytest.mark.slow
def test_text_cleaning_drops_near_duplicates_and_flags_label_issues(tmp_path):
    rng = np.random.default_rng(0)
    good = ["great", "love", "wonderful", "happy", "excellent", "nice"]
    bad = ["awful", "hate", "terrible", "sad", "horrible", "worst"]
    fill = ["today", "the", "movie", "really", "was", "food", "service", "it", "so", "my"]
    rows = []
    for i in range(160):
        label = "pos" if i % 2 else "neg"
        words = list(rng.choice(fill, 5)) + list(rng.choice(good if i % 2 else bad, 2))
        rng.shuffle(words)
        rows.append((" ".join(words) + f" number {i}", label))
    rows.append((rows[3][0] + " !!", rows[3][1]))  # a near duplicate
    for i in range(6):  # mislabeled
        text, label = rows[2 * i + 1]
        rows[2 * i + 1] = (text, "neg" if label == "pos" else "pos")
    path = tmp_path / "texts.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    # a test file of its own, so that every planted problem is in the records cleaning sees
    test_rows = [(f"{good[i % 6] if i % 2 else bad[i % 6]} test {i}", "pos" if i % 2 else "neg")
                 for i in range(20)]  # fmt: skip
    with open(tmp_path / "test.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *test_rows])
    from lifecycle.models import TextCNN
    from lifecycle.stages import ClassificationModule

    dm = TextClassificationDataModule(str(path), vocab_size=300, max_length=24, batch_size=16,
                                      test_dataset=str(tmp_path / "test.csv"))  # fmt: skip
    model = ClassificationModule(
        TextCNN(vocab_size=300, embedding_dim=16, num_filters=16, kernel_sizes=[2, 3]),
        num_classes=2,
    )
    cleaner = DataCleaner(folds=3, label_issues="flag", text_similarity=0.7)
    trainer = {"max_epochs": 8, "accelerator": "cpu", "enable_progress_bar": False}
    result = cleaner.run(dm, model, trainer, tmp_path / "out")
    kinds = {(f.source.rsplit(":", 1)[-1], f.kind) for f in result.findings}
    assert ("line 162", "near duplicate") in kinds  # row 160, after the header line
    flagged = {f.source for f in result.findings if f.kind == "label issue"}
    planted = {f"texts.csv:line {2 * i + 3}" for i in range(6)}
    assert len(flagged & planted) >= 4, flagged
    assert all(f.action == "flagged" for f in result.findings if f.kind == "label issue")
    assert len(result.kept) == 161 - 1  # flags remove nothing
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Label issue" in report and "number 1" in report
    cleaned = TextClassificationDataModule(
        str(path), cleaned_manifest=str(tmp_path / "out" / "manifest.csv"), vocab_size=300,
        test_dataset=str(tmp_path / "test.csv"),
    )  # fmt: skip
    cleaned.setup()
    assert len(cleaned.texts["train"]) + len(cleaned.texts["val"]) == 160
    assert len(cleaned.texts["test"]) == 20


def test_nan_images_in_an_npz_are_listed_and_skipped_by_cleaning_not_by_training(tmp_path):
    x = np.random.default_rng(0).random((12, 8, 8)).astype(np.float32)
    x[3, 2, 2] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12) % 2)
    records = ImageClassificationDataModule(str(tmp_path / "d.npz")).cleaning_records()
    # 2 of the 12 are held out as the test split, which cleaning never sees
    assert len(records) + len(records.test_sources) == 11 and "d.npz:x[3]" not in records.sources
    assert [(i.source, i.reason) for i in records.issues] == [("d.npz:x[3]", "NaN or Inf pixels")]
    with pytest.raises(
        DataValidationError, match="1 images hold NaN or Inf values; the first is row 3"
    ):
        ImageClassificationDataModule(str(tmp_path / "d.npz")).setup()


def test_a_builtin_without_files_names_its_records_so_its_manifest_applies(tmp_path):
    result = DataCleaner(label_issues="off", near_duplicates=False).run(
        ImageClassificationDataModule("digits"), out_dir=tmp_path
    )
    assert result.records.sources[:2] == ["digits[0]", "digits[1]"]
    dm = ImageClassificationDataModule("digits", cleaned_manifest=str(tmp_path / "manifest.csv"))
    dm.setup()
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == len(result.kept)
    assert len(dm.splits["test"]) == len(result.records.test_sources)  # held out, never cleaned


def test_duplicate_scores_are_similarities_with_one_for_exact_copies(fashion_with_copies):
    from lifecycle.data.cleaning.records import CleaningRecords

    images, truth = fashion_with_copies
    images = np.concatenate([images, images[:1]])  # and one exact copy of image 0
    records = CleaningRecords("image", images, np.zeros(len(images), dtype=np.int64),
                              [f"r{i}" for i in range(len(images))], ["a", "b"])  # fmt: skip
    findings = DataCleaner(label_issues="off").find_duplicates(records)
    exact = [f for f in findings if f.kind == "exact duplicate"]
    near = [f for f in findings if f.kind == "near duplicate"]
    assert [(f.source, f.score) for f in exact] == [(f"r{len(images) - 1}", 1.0)]
    assert near and all(0.985 <= f.score <= 1.0 for f in near)  # a shifted copy may agree fully


def test_saved_probabilities_replace_kfold_training_and_are_checked(tmp_path):
    dm = ImageClassificationDataModule("digits")
    labels = dm.cleaning_records().labels
    rng = np.random.default_rng(0)
    probs = np.full((len(labels), 10), 0.01, dtype=np.float32)
    probs[np.arange(len(labels)), labels] = 0.91
    wrong = rng.choice(len(labels), 20, replace=False)
    probs[wrong] = 0.01
    probs[wrong, (labels[wrong] + 1) % 10] = 0.91  # the model is sure these belong elsewhere
    np.save(tmp_path / "p.npy", probs)
    cleaner = DataCleaner(label_issues="relabel", duplicates="flag", leakage="flag",
                          near_duplicates=False, probabilities=str(tmp_path / "p.npy"))  # fmt: skip
    result = cleaner.run(dm)  # no model: nothing is trained
    relabeled = {f.index: f.suggested for f in result.findings if f.action == "relabeled"}
    assert set(relabeled) == set(wrong.tolist())
    assert all(relabeled[i] == str((labels[i] + 1) % 10) for i in wrong)
    np.save(tmp_path / "short.npy", probs[:100])
    with pytest.raises(ValueError, match="holds \\(100, 10\\) but this data has 1438 records"):
        DataCleaner(near_duplicates=False, probabilities=str(tmp_path / "short.npy")).run(dm)
    probs[5] = np.nan  # a record the earlier run had dropped as a copy
    np.save(tmp_path / "nan.npy", probs)
    with pytest.raises(ValueError, match="no probabilities for 1 records this run keeps"):
        DataCleaner(duplicates="flag", leakage="flag", near_duplicates=False,
                    probabilities=str(tmp_path / "nan.npy")).run(dm)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DataCleaner(probabilities=str(tmp_path / "none.npy")).run(dm)
