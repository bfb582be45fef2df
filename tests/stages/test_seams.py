"""The seams of lifecycle.interfaces as the stages see them: what they require of a DataModule
and a backbone (an error naming what is missing), what they need the data to be (declared,
never done to the DataModule), what they write (by name), and a head sized by its backbone."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lifecycle.errors import ConfigError
from lifecycle.interfaces import DataNeeds, output_paths
from lifecycle.models import MLP, LinearHead, SmallCNN
from lifecycle.models.weights import PretrainedInfo
from lifecycle.stages import (
    ClassificationModule,
    ContrastivePretrainingModule,
    MaskedLMPretrainingModule,
    RegressionModule,
)
from tests.conftest import quiet_trainer


class UserRegressionData(L.LightningDataModule):
    """A user's own DataModule: batches of features and targets, no target statistics."""

    def train_dataloader(self):
        rows = [{"features": torch.randn(3), "target": torch.tensor(5.0)} for _ in range(8)]
        return DataLoader(rows, batch_size=4)


class UserClassificationData(L.LightningDataModule):
    """A user's DataModule for classification without `num_classes`."""

    def train_dataloader(self):
        rows = [{"features": torch.randn(3), "label": torch.tensor(i % 2)} for i in range(8)]
        return DataLoader(rows, batch_size=4)


def test_a_regression_datamodule_without_target_mean_is_an_error_naming_it(tmp_path):
    model = RegressionModule(MLP(3, hidden=(4,)))
    with pytest.raises(ConfigError, match="`target_mean`") as err:
        quiet_trainer(tmp_path, max_epochs=1).fit(model, datamodule=UserRegressionData())
    assert "RegressionData" in str(err.value) and "standardize_target: false" in str(err.value)
    # the fix the message gives works
    model = RegressionModule(MLP(3, hidden=(4,)), standardize_target=False)
    quiet_trainer(tmp_path, max_epochs=1).fit(model, datamodule=UserRegressionData())
    assert float(model.target_mean) == 0.0 and float(model.target_std) == 1.0


def test_regression_target_statistics_that_are_unset_are_an_error(tmp_path):
    class Unset(UserRegressionData):
        target_mean, target_std = None, None

    with pytest.raises(ConfigError, match="no usable target statistics"):
        quiet_trainer(tmp_path, max_epochs=1).fit(
            RegressionModule(MLP(3, hidden=(4,))), datamodule=Unset()
        )

    class Given(UserRegressionData):
        target_mean, target_std = 5.0, 2.0

    model = RegressionModule(MLP(3, hidden=(4,)))
    quiet_trainer(tmp_path, max_epochs=1).fit(model, datamodule=Given())
    assert (float(model.target_mean), float(model.target_std)) == (5.0, 2.0)


def test_a_classification_datamodule_without_num_classes_is_an_error_naming_it(tmp_path):
    model = ClassificationModule(MLP(3, hidden=(4,)), num_classes=2, input_key="features")
    with pytest.raises(ConfigError, match="`num_classes`.*ClassificationData"):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, datamodule=UserClassificationData())


def test_a_language_model_without_a_data_tokenizer_names_the_attribute(tmp_path):
    model = MaskedLMPretrainingModule(hidden_size=8, num_layers=1, num_heads=2,
                                      intermediate_size=16, max_length=8)  # fmt: skip
    with pytest.raises(ConfigError, match="`tokenizer`.*TokenizedData.*vocab_size"):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, datamodule=UserRegressionData())


def pretrained_cnn(mean=(0.5,), std=(0.25,)):
    backbone = SmallCNN(channels=[4], pool_size=2, hidden=8)
    backbone.pretrained = PretrainedInfo("pre", {}, list(mean), list(std))
    return backbone


def test_a_stage_declares_the_normalization_of_its_pretrained_backbone():
    needs = ClassificationModule(pretrained_cnn(), num_classes=3).data_needs()
    assert needs == DataNeeds(mean=[0.5], std=[0.25], normalization_source="pre")
    assert ClassificationModule(SmallCNN(channels=[4], hidden=8), num_classes=3).data_needs().empty


def test_a_datamodule_that_cannot_take_the_normalization_is_refused_not_skipped(tmp_path):
    model = ClassificationModule(pretrained_cnn(), num_classes=2)
    with pytest.raises(ConfigError, match="apply_data_needs"):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, datamodule=UserClassificationData())


def test_the_datamodule_gets_the_needs_before_its_setup_and_is_never_rebuilt(tmp_path):
    from lifecycle.data import ImageClassificationDataModule

    class Counting(ImageClassificationDataModule):
        applied: list = []

        def apply_data_needs(self, needs):
            self.applied.append(needs)
            super().apply_data_needs(needs)

    data = Counting(dataset="digits", batch_size=64, data_dir=str(tmp_path))
    model = ClassificationModule(pretrained_cnn(), num_classes=10)
    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1).fit(
        model, datamodule=data
    )
    assert Counting.applied[0] == model.data_needs() and data.mean == [0.5]


# --------------------------------------------------------------------------- heads
def test_a_head_without_in_features_is_sized_from_the_backbone():
    backbone = SmallCNN(channels=[4], hidden=8)
    model = ClassificationModule(backbone, num_classes=3, head=LinearHead(out_features=3))
    assert model.head.linear.in_features == backbone.out_features == 8
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ConfigError, match="head takes 5 features but the backbone .* gives 8"):
        ClassificationModule(backbone, num_classes=3, head=LinearHead(5, 3))


def test_a_yaml_head_gets_the_backbones_out_features_through_lightning_cli():
    from lightning.pytorch.cli import LightningCLI

    config = {
        "model": {
            "num_classes": 3,
            "backbone": {"class_path": "lifecycle.models.MLP",
                         "init_args": {"in_features": 4, "hidden": [6]}},
            "head": {"class_path": "lifecycle.models.LinearHead",
                     "init_args": {"out_features": 3, "dropout": 0.1}},
            "input_key": "features",
        },
        "trainer": {"logger": False, "enable_checkpointing": False},
    }  # fmt: skip
    cli = LightningCLI(ClassificationModule, run=False, args=config, save_config_callback=None)
    assert cli.model.head.linear.in_features == 6
    assert cli.model.hparams["head"]["init_args"].get("in_features") is None
    assert cli.model(torch.randn(2, 4)).shape == (2, 3)


# --------------------------------------------------------------------------- outputs
def test_every_stage_declares_its_outputs_by_name(tmp_path):
    for stage in (ClassificationModule, RegressionModule):
        assert {"checkpoint", "log", "config", "metrics", "predictions"} <= set(stage.outputs)
    for stage in (ContrastivePretrainingModule, MaskedLMPretrainingModule):
        assert {"checkpoint", "backbone", "backbone_manifest"} <= set(stage.outputs)
    paths = output_paths(MaskedLMPretrainingModule, tmp_path)
    assert paths["backbone"] == tmp_path / "pretrained"
    assert paths["tokenizer"] == tmp_path / "pretrained" / "tokenizer.json"


def run_cli(tmp_path, model: str, data: str, test: bool = True) -> Path:
    from lifecycle.cli import main

    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"""
test_after_fit: {str(test).lower()}
trainer:
  {{max_epochs: 1, limit_train_batches: 2, limit_val_batches: 1, limit_test_batches: 1,
   accelerator: cpu, enable_progress_bar: false, enable_model_summary: false,
   default_root_dir: {tmp_path / "runs"}}}
model: {model}
data: {data}
"""
    )
    main(["fit", "--config", str(recipe)])
    (run,) = (tmp_path / "runs").glob("*/version_0")
    return run


@pytest.mark.slow
def test_each_declared_output_exists_after_a_tiny_fit_and_test(tmp_path):
    cnn = "{class_path: lifecycle.models.SmallCNN, init_args: {channels: [4], pool_size: 2, hidden: 8}}"
    run = run_cli(
        tmp_path / "classify",
        f"{{class_path: lifecycle.stages.ClassificationModule, init_args: {{num_classes: 10, backbone: {cnn}}}}}",
        "{class_path: lifecycle.data.ImageClassificationDataModule, init_args: {dataset: digits, batch_size: 64}}",
    )  # fmt: skip
    declared = ClassificationModule.outputs
    for name, path in output_paths(ClassificationModule, run).items():
        if declared[name].written_by in ("fit", "test"):
            assert path.exists(), (name, path, sorted(p.name for p in run.iterdir()))
    assert json.loads(output_paths(ClassificationModule, run)["metrics"].read_text())["metrics"]

    run = run_cli(
        tmp_path / "simclr",
        f"{{class_path: lifecycle.stages.ContrastivePretrainingModule, init_args: {{backbone: {cnn}, projection_dim: 4}}}}",
        "{class_path: lifecycle.data.ImageClassificationDataModule, init_args: "
        "{dataset: digits, batch_size: 32, views: 2, train_transforms: simclr}}",
        test=False,
    )  # fmt: skip
    paths = output_paths(ContrastivePretrainingModule, run)
    for name, path in paths.items():
        assert path.exists(), (name, path, sorted(p.name for p in run.iterdir()))
    manifest = json.loads(paths["backbone_manifest"].read_text())
    assert manifest["kind"] == "image"


# --------------------------------------------------------------------------- the LM backbone
def test_the_language_model_backbone_is_a_module_sharing_the_trained_weights():
    from lifecycle.training.finetuning import layer_groups

    model = MaskedLMPretrainingModule(hidden_size=8, num_layers=2, num_heads=2,
                                      intermediate_size=16, max_length=8, vocab_size=30)  # fmt: skip
    backbone = model.backbone
    assert isinstance(backbone, nn.Module) and model.backbone is backbone  # one, kept
    assert backbone.encoder is model.model.base_model  # the same modules, not a copy
    assert len(layer_groups(backbone)) == 3  # embeddings + 2 layers: the callbacks' view
    backbone.requires_grad_(False)  # what LinearProbe / FreezeUnfreeze do
    assert not any(p.requires_grad for p in model.model.base_model.parameters())
    assert any(p.requires_grad for p in model.model.cls.parameters())  # the LM head trains
    assert not any(k.startswith("backbone.") for k in model.state_dict())
    assert backbone.init_args["num_layers"] == 2 and backbone.init_args["vocab_size"] == 30


def test_a_protocol_check_names_every_missing_member():
    from lifecycle.interfaces import ExampleBatches, RegressionData, require_protocol

    with pytest.raises(ConfigError, match="`target_mean`, `target_std`.*RegressionData.*Fix: add"):
        require_protocol(UserRegressionData(), RegressionData, "RegressionModule", "add them")
    with pytest.raises(ConfigError, match="`example_batch`, `split_dataset`"):
        require_protocol(object(), ExampleBatches, "distillation", "add them")
