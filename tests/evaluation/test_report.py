import csv
import json
from functools import partial

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from lifecycle.data import ImageClassificationDataModule, TabularDataModule
from lifecycle.evaluation import EvaluationReport, PredictionWriter
from lifecycle.evaluation.plots import plot_curves, read_metrics_csv
from lifecycle.models import MLP
from lifecycle.stages import ClassificationModule, RegressionModule
from tests.conftest import quiet_trainer


def test_classification_report_and_predictions(tmp_path):
    torch.manual_seed(0)
    dm = ImageClassificationDataModule("digits", batch_size=64)
    model = ClassificationModule(
        MLP(in_features=64, hidden=[32]),
        num_classes=10,
        optimizer=partial(torch.optim.Adam, lr=0.01),
    )
    logger = CSVLogger(tmp_path, name="run")
    trainer = quiet_trainer(
        tmp_path, max_epochs=3, logger=logger, callbacks=[EvaluationReport(), PredictionWriter()]
    )
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    run = tmp_path / "run" / "version_0"
    report = json.loads((run / "metrics.json").read_text())
    assert set(report["metrics"]) == {"loss", "accuracy", "precision", "recall", "f1", "auroc"}
    assert report["class_names"] == [str(i) for i in range(10)]
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum() == len(dm.splits["test"])
    assert abs(np.trace(matrix) / matrix.sum() - report["metrics"]["accuracy"]) < 1e-6
    for png in ("confusion_matrix.png", "roc_curve.png"):
        assert (run / png).read_bytes()[:4] == b"\x89PNG"

    trainer.predict(model, dm)
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    assert len(rows) == len(dm.splits["test"])
    assert abs(sum(float(rows[0][f"prob_{i}"]) for i in range(10)) - 1) < 1e-4
    agree = np.mean([r["prediction"] == r["label"] for r in rows])
    assert abs(agree - report["metrics"]["accuracy"]) < 1e-6

    series = read_metrics_csv(run / "metrics.csv")
    assert len(series["val/loss"][1]) == 3 and "train/loss" in series
    fig = plot_curves({"a": series}, "val/loss")
    assert len(fig.axes[0].lines) == 1


def test_regression_report_has_the_scatter(tmp_path):
    dm = TabularDataModule("diabetes")
    model = RegressionModule(MLP(in_features=10, hidden=[16]))
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=2,
        logger=CSVLogger(tmp_path, name="reg"),
        callbacks=[EvaluationReport()],
    )
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    run = tmp_path / "reg" / "version_0"
    report = json.loads((run / "metrics.json").read_text())
    assert {"mse", "rmse", "mae", "r2"} <= set(report["metrics"]) and report["num_samples"] == len(
        dm.splits["test"]
    )
    assert (
        abs(report["metrics"]["rmse"] ** 2 - report["metrics"]["mse"])
        < 1e-2 * report["metrics"]["mse"]
    )
    # the plot shows every test record at (true value, prediction), and the file is that plot
    scatter = model.report_figures()["predicted_vs_true"].axes[0].collections[0]
    true, predicted = np.asarray(scatter.get_offsets()).T
    assert np.sort(true) == pytest.approx(np.sort(dm.splits["test"].y), rel=1e-5)
    assert np.mean((true - predicted) ** 2) == pytest.approx(report["metrics"]["mse"], rel=1e-4)
    from PIL import Image

    with Image.open(run / "predicted_vs_true.png") as image:
        assert image.size == (660, 660) and len(set(image.convert("L").getdata())) > 20


def _plain_module(kind: str):
    import lightning as L

    class Plain(L.LightningModule):
        def predict_step(self, batch, batch_idx):
            (x,) = batch
            if kind == "tensor":  # one value per record
                return x[:, 0] * 10
            if kind == "logits":  # (records, 3)
                return x @ torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]])
            return x[:, 0].long(), x.sum(1)  # a tuple of tensors

    return Plain()


@pytest.mark.parametrize(
    "kind, header, row_3",
    [
        ("tensor", ["index", "prediction"], ["3", "60"]),
        (
            "logits",
            ["index", "prediction_0", "prediction_1", "prediction_2"],
            ["3", "6", "7", "33"],
        ),
        ("tuple", ["index", "output_0", "output_1"], ["3", "6", "13"]),
    ],
)
def test_prediction_writer_takes_a_plain_tensor_or_a_tuple_from_predict_step(
    tmp_path, kind, header, row_3
):
    x = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=2)
    writer = PredictionWriter()
    trainer = quiet_trainer(tmp_path, logger=CSVLogger(tmp_path, name="run"), callbacks=[writer])
    trainer.predict(_plain_module(kind), loader)
    rows = list(csv.reader(open(tmp_path / "run" / "version_0" / "predictions.csv")))
    assert rows[0] == header
    assert [r[0] for r in rows[1:]] == ["0", "1", "2", "3", "4"]
    assert rows[4] == row_3  # the record x = [6, 7]
