"""The private Lightning names the stages use, through lifecycle.compat: each test fails
loudly when a Lightning upgrade renames or removes one."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lifecycle.compat import INSTANTIATOR_KEY, checkpoint_instantiator, cli_given_hyperparameters
from lifecycle.models import MLP
from lifecycle.stages import ClassificationModule


class Recording(L.LightningModule):
    def __init__(self, width: int = 3):
        super().__init__()
        self.given = cli_given_hyperparameters()
        self.save_hyperparameters()


def cli_model(cls, model: dict):
    trainer = {"logger": False, "enable_checkpointing": False}
    args = {"model": model, "trainer": trainer}
    return LightningCLI(cls, run=False, args=args, save_config_callback=None).model


def test_the_cli_config_is_seen_while_lightning_cli_builds_a_module():
    assert Recording().given is None  # built from Python
    module = cli_model(Recording, {"width": 5})
    assert module.given is not None and module.given["width"] == 5
    # the key check_checkpoint reads, as Lightning writes it into the hyperparameters
    assert (
        checkpoint_instantiator(dict(module.hparams)) == "lightning.pytorch.cli.instantiate_module"
    )
    assert INSTANTIATOR_KEY in module.hparams
    assert checkpoint_instantiator(dict(Recording().hparams)) is None


def test_module_arguments_stay_out_of_python_hparams_and_in_cli_ones():
    from_python = ClassificationModule(MLP(4, hidden=(3,)), num_classes=2, input_key="features")
    assert "backbone" not in from_python.hparams and "head" not in from_python.hparams
    spec = {"class_path": "lifecycle.models.MLP", "init_args": {"in_features": 4, "hidden": [3]}}
    from_cli = cli_model(
        ClassificationModule, {"backbone": spec, "num_classes": 2, "input_key": "features"}
    )
    assert from_cli.hparams["backbone"]["class_path"] == "lifecycle.models.MLP"
