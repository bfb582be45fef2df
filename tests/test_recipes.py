"""Every shipped recipe parses against the classes it names, and opens with the command that runs it."""

import re
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import LightningDataModule, LightningModule

from lifecycle.cli import CleanCLI, LifecycleCLI
from lifecycle.data.cleaning import DataCleaner
from tests.conftest import REPO

RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def test_the_required_recipes_exist():
    names = {str(p.relative_to(REPO / "recipes")) for p in RECIPES}
    assert {
        "fashion_mnist/classify.yaml",
        "digits/classify.yaml",
        "tabular/regression.yaml",
        "tweets/classify_rnn.yaml",
        "tweets/classify_cnn.yaml",
        "tweets/classify_transformer.yaml",
        "fashion_mnist/clean.yaml",
        "tweets/clean.yaml",
    } <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_parses_and_instantiates(recipe: Path, tmp_path):
    config = yaml.safe_load(recipe.read_text())
    # clean recipes (a `cleaning:` section) are read by `lifecycle clean`
    cli_class = CleanCLI if "cleaning" in config else LifecycleCLI
    cli = cli_class(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        auto_configure_optimizers=False,
        args=["--config", str(recipe), "--trainer.default_root_dir", str(tmp_path)],
    )
    if "cleaning" in config:
        assert isinstance(cli.config_init["cleaning"], DataCleaner)
        assert cli.config_init["cleaning"].folds == config["cleaning"].get("folds", 5)
    assert type(cli.model).__name__ == config["model"]["class_path"].rsplit(".", 1)[1]
    assert type(cli.datamodule).__name__ == config["data"]["class_path"].rsplit(".", 1)[1]
    backbone = config["model"]["init_args"]["backbone"]["class_path"].rsplit(".", 1)[1]
    assert type(cli.model.backbone).__name__ == backbone


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_header_gives_its_command(recipe: Path):
    header = [line for line in recipe.read_text().splitlines() if line.startswith("#")]
    rel = recipe.relative_to(REPO)
    assert any(
        re.search(rf"lifecycle \w+ --config {re.escape(str(rel))}", line) for line in header[:4]
    ), header
    assert any(line.startswith("# Needs:") for line in header)
