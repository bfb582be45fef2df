from functools import partial

import torch

from lifecycle.data import TabularDataModule
from lifecycle.models import MLP
from lifecycle.stages import RegressionModule
from tests.conftest import quiet_trainer


def test_diabetes_regression_beats_the_mean_and_predicts_in_target_units(tmp_path):
    torch.manual_seed(0)
    dm = TabularDataModule("diabetes", batch_size=32)
    model = RegressionModule(
        MLP(in_features=10, hidden=[32]), optimizer=partial(torch.optim.Adam, lr=0.01)
    )
    trainer = quiet_trainer(tmp_path, max_epochs=40)
    trainer.fit(model, dm)
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert set(metrics) == {"test/loss", "test/mse", "test/rmse", "test/mae", "test/r2"}
    assert metrics["test/r2"] > 0.35 and metrics["test/mae"] < 55
    assert abs(model.target_mean.item() - dm.target_mean) < 1e-3 and model.target_std.item() > 50
    pred = model(dm._datasets["test"].features[:16])
    assert 50 < pred.mean().item() < 250  # original units (the target ranges 25..346)
    fig = model.report_figures()["predicted_vs_true"]
    assert fig.axes[0].collections[0].get_offsets().shape == (len(dm.splits["test"]), 2)
    assert model.state_dict()["target_std"].item() == model.target_std.item()  # kept in checkpoints
