import numpy as np
import pytest
import torch

from lifecycle.data import DataValidationError, TabularDataModule


def test_diabetes_regression_splits_and_standardizes():
    dm = TabularDataModule("diabetes", val_fraction=0.15, test_fraction=0.2, batch_size=16)
    dm.setup("fit")
    sizes = [len(dm.splits[k]) for k in ("train", "val", "test")]
    assert sum(sizes) == 442 and sizes[2] == round(442 * 0.2)
    feats = dm._datasets["train"].features
    assert torch.allclose(feats.mean(0), torch.zeros(10), atol=1e-5)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"features", "target"} and batch["target"].dtype == torch.float32
    assert 140 < dm.target_mean < 165 and dm.num_features == 10


def test_csv_classification_maps_text_labels_and_stratifies(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["f1,f2,kind"] + [
        f"{rng.normal()},{rng.normal()},{'spam' if i % 3 else 'ham'}" for i in range(90)
    ]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    dm = TabularDataModule(
        str(tmp_path / "t.csv"), task="classification", val_fraction=0.2, test_fraction=0.2
    )
    dm.setup("fit")
    assert dm.class_names == ["ham", "spam"] and dm.num_classes == 2
    batch = next(iter(dm.val_dataloader()))
    assert batch["label"].dtype == torch.long
    assert abs(dm.splits["val"].y.mean() - 2 / 3) < 0.07
    sources = dm.predict_sources  # predict runs on the test split: its CSV lines name each row
    assert len(sources) == len(dm.predict_dataloader().dataset) == len(dm.splits["test"])
    assert all(s.startswith("t.csv:line ") for s in sources)


def test_nan_features_name_count_and_first_row(tmp_path):
    (tmp_path / "t.csv").write_text(
        "a,b,y\n" + "".join(f"{i},{'' if i in (4, 8) else 1},{i}\n" for i in range(20))
    )
    dm = TabularDataModule(str(tmp_path / "t.csv"))
    with pytest.raises(
        DataValidationError,
        match=r"2 of 20 rows have NaN or Inf features; the first is t.csv:line 6",
    ):
        dm.setup("fit")


def test_text_target_in_regression_says_to_use_classification(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n1,2.5\n2,high\n3,1.0\n")
    with pytest.raises(DataValidationError, match="task: classification"):
        TabularDataModule(str(tmp_path / "t.csv")).setup("fit")


def test_arrays_from_npz(tmp_path):
    np.savez(
        tmp_path / "a.npz",
        x=np.random.rand(50, 3),
        y=np.random.rand(50),
        x_test=np.random.rand(10, 3),
        y_test=np.random.rand(10),
    )
    dm = TabularDataModule(str(tmp_path / "a.npz"), val_fraction=0.2)
    dm.setup("fit")
    assert len(dm.splits["test"]) == 10 and len(dm.splits["train"]) == 40


def _gappy_csv(tmp_path):
    path = tmp_path / "gappy.csv"
    rows = ["a,b,y"] + [f"{i},{i % 3},{i % 2}" for i in range(40)]
    rows[3] = "2,,0"  # missing b (line 4)
    rows[6] = ",2,1"  # missing a (line 7)
    rows[9] = "8,2,"  # missing target (line 10)
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("policy", ["drop", "median", "mode"])
def test_missing_values_follow_the_policy_and_are_listed(tmp_path, policy):
    dm = TabularDataModule(str(_gappy_csv(tmp_path)), task="classification", missing=policy,
                           val_fraction=0.2, test_fraction=0.2, standardize=False)  # fmt: skip
    dm.setup()
    rows = {
        s: x for split in dm.splits.values() for s, x in zip(split.sources, split.x, strict=True)
    }
    issues = {(i.source, i.reason): i for i in dm.issues}
    assert issues[("gappy.csv:line 10", "missing target")].action == "dropped"
    assert "gappy.csv:line 10" not in rows
    if policy == "drop":
        assert len(rows) == 37 and "gappy.csv:line 4" not in rows
        assert issues[("gappy.csv:line 4", "missing feature value")].detail == "b"
    else:
        assert len(rows) == 39 and np.isfinite(np.stack(list(rows.values()))).all()
        column_b = [i % 3 for i in range(40) if i not in (2, 8)]
        expected = np.median(column_b) if policy == "median" else 0.0  # 0 is the most frequent
        assert rows["gappy.csv:line 4"][1] == pytest.approx(expected)
        assert issues[("gappy.csv:line 4", "missing feature value")].action == f"filled ({policy})"
    with pytest.raises(DataValidationError, match="the first is gappy.csv:line 10"):
        TabularDataModule(str(_gappy_csv(tmp_path)), task="classification").setup()
    with pytest.raises(ValueError, match="`missing` must be"):
        TabularDataModule(missing="mean")


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_an_empty_target_is_an_error_naming_the_line_or_dropped_and_listed(tmp_path, task):
    import csv

    import lightning as L

    path = tmp_path / "t.csv"
    rows = ["a,y"] + [f"{i},{i % 2}" for i in range(30)]
    rows[5] = "4,"  # line 6: no target
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(
        DataValidationError,
        match=r"1 of 30 rows have an empty or NaN target; the first is t.csv:line 6\. "
        r"Fix: .*`missing: drop`",
    ):  # it was the class "" (or, for regression, "not a number")
        TabularDataModule(str(path), task=task).setup()
    dm = TabularDataModule(str(path), task=task, missing="drop")
    dm.trainer = L.Trainer(default_root_dir=tmp_path, logger=L.pytorch.loggers.CSVLogger(tmp_path))
    dm.setup()
    assert sum(len(s) for s in dm.splits.values()) == 29
    if task == "classification":
        assert dm.class_names == ["0", "1"]
    with open(tmp_path / "lightning_logs" / "version_0" / "data_issues.csv") as f:
        listed = list(csv.DictReader(f))
    assert [(r["source"], r["reason"], r["action"]) for r in listed] == [
        ("t.csv:line 6", "missing target", "dropped")
    ]
