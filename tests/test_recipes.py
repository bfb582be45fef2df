"""Every shipped recipe parses against the classes it names, and opens with the command that runs it."""

import re
from pathlib import Path

import pytest
import torch
import yaml

from lifecycle.cli import CleanCLI, LifecycleCLI, recipe_cli
from lifecycle.data.cleaning import DataCleaner
from tests.conftest import REPO

FRAGMENT_DIRS = ("strategies", "precision")
ALL_YAML = sorted((REPO / "recipes").rglob("*.yaml"))
# config fragments added to a recipe with a second --config (trainer settings only)
FRAGMENTS = [p for p in ALL_YAML if p.parent.name in FRAGMENT_DIRS]
# pipeline recipes (`lifecycle run`): stages, each a stage recipe with overrides and inputs
PIPELINES = [p for p in ALL_YAML if "stages" in (yaml.safe_load(p.read_text()) or {})]
# sweep files (`lifecycle tune sweep --sweep`: `params:`) and tuning sections added to a recipe
# (`lifecycle tune --config RECIPE --config TUNING`: `tuning:`)
SWEEPS = [p for p in ALL_YAML if "params" in (yaml.safe_load(p.read_text()) or {})]
TUNING = [p for p in ALL_YAML if "tuning" in (yaml.safe_load(p.read_text()) or {})]
RECIPES = [p for p in ALL_YAML if p not in FRAGMENTS + PIPELINES + SWEEPS + TUNING]


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
        "fashion_mnist/pretrain_simclr.yaml",
        "fashion_mnist/finetune_simclr.yaml",
        "text/pretrain_mlm.yaml",
        "text/pretrain_clm.yaml",
        "tweets/finetune_mlm.yaml",
        "tweets/transfer_minilm.yaml",
        "fashion_mnist/transfer_efficientnet.yaml",
        "fashion_mnist/distill.yaml",
        "tweets/distill_minilm.yaml",
    } <= names


def pretrained_folder(tmp_path, kind: str) -> str:
    """A small pretrained-backbone folder of the kind a fine-tuning recipe reads."""
    from types import SimpleNamespace

    from lifecycle.artifacts import save_backbone
    from lifecycle.data.tokenization import train_tokenizer
    from lifecycle.models import SmallCNN, TransformerEncoder

    folder = tmp_path / f"pretrained-{kind}"
    if kind == "image":
        save_backbone(folder, SmallCNN(channels=(32, 64), dropout=0.0))
    else:
        tokenizer = train_tokenizer(["a tweet", "another tweet"] * 20, vocab_size=300)
        data = SimpleNamespace(tokenizer=tokenizer, max_length=64, hparams={})
        save_backbone(folder, TransformerEncoder(len(tokenizer), max_length=64), datamodule=data)
    return str(folder)


def teacher_checkpoint(tmp_path, recipe: str, **datamodule_state) -> str:
    """A checkpoint of the (untrained) model of the recipe that trains a distillation teacher,
    with what a ``lifecycle fit`` checkpoint holds for ``load_teacher``: the recipe's
    hyperparameters (so the module is rebuilt) and any DataModule state given
    (``ImageClassificationDataModule={...}``)."""
    import lightning
    import torch

    cli = recipe_cli(LifecycleCLI, ["--config", str(REPO / recipe),
                                    "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    path = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": cli.model.state_dict(), "hyper_parameters": dict(cli.model.hparams),
                "pytorch-lightning_version": lightning.__version__, **datamodule_state},
               path)  # fmt: skip
    return str(path)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_parses_and_instantiates(recipe: Path, tmp_path):
    config = yaml.safe_load(recipe.read_text())
    # clean recipes (a `cleaning:` section) are read by `lifecycle clean`
    cli_class = CleanCLI if "cleaning" in config else LifecycleCLI
    args = ["--config", str(recipe), "--trainer.default_root_dir", str(tmp_path)]
    backbone_config = config["model"]["init_args"].get("backbone", {})
    if backbone_config.get("class_path") == "lifecycle.artifacts.load_backbone":
        # a fine-tuning recipe: point it at a pretrained folder (a pretraining run writes one)
        kind = "text" if "Text" in config["data"]["class_path"] else "image"
        folder = pretrained_folder(tmp_path, kind)
        args += ["--model.init_args.backbone.init_args.path", folder]
        if kind == "text":
            args += ["--data.init_args.tokenizer", folder]
    teacher_config = config["model"]["init_args"].get("teacher", {})
    if teacher_config.get("class_path") == "lifecycle.stages.distillation.load_teacher":
        # a distillation recipe: point it at a checkpoint of the recipe its header names
        needs = re.search(r"# Needs: .*?(recipes/\S+\.yaml)", recipe.read_text()).group(1)
        args += ["--model.init_args.teacher.init_args.path", teacher_checkpoint(tmp_path, needs)]
    cli = recipe_cli(cli_class, args)
    if "cleaning" in config:
        assert isinstance(cli.config_init["cleaning"], DataCleaner)
        assert cli.config_init["cleaning"].folds == config["cleaning"].get("folds", 5)
    assert type(cli.model).__name__ == config["model"]["class_path"].rsplit(".", 1)[1]
    assert type(cli.datamodule).__name__ == config["data"]["class_path"].rsplit(".", 1)[1]
    if backbone_config.get("class_path") == "lifecycle.artifacts.load_backbone":
        assert cli.model.backbone.pretrained.folder.name.startswith("pretrained-")
    elif teacher_config:
        student = config["model"]["init_args"]["student"]["class_path"].rsplit(".", 1)[1]
        assert type(cli.model.backbone).__name__ == student
        assert type(cli.model.teacher).__name__ == "ClassificationModule"
        assert not cli.model.teacher.training
    elif backbone_config:  # language-model recipes build their network from sizes instead
        backbone = backbone_config["class_path"].rsplit(".", 1)[1]
        assert type(cli.model.backbone).__name__ == backbone


def test_the_pipeline_recipes_exist():
    names = {str(p.relative_to(REPO / "recipes")) for p in PIPELINES}
    assert {
        "fashion_mnist/lifecycle.yaml",
        "fashion_mnist/lifecycle_quick.yaml",
        "tweets/lifecycle.yaml",
    } <= names


@pytest.mark.parametrize("recipe", PIPELINES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_pipeline_recipe_plans(recipe: Path, tmp_path, monkeypatch, capsys):
    """Every stage's config resolves with its overrides, and every input names an output of
    the kind its field takes (the checks of `lifecycle run --dry-run`)."""
    from lifecycle.cli import main

    monkeypatch.chdir(REPO)
    main(["run", "--config", str(recipe.relative_to(REPO)), "--dry-run", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    stages = yaml.safe_load(recipe.read_text())["stages"]
    assert "dry run: nothing ran." in out
    for name in stages:
        assert name in out
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"


@pytest.mark.parametrize("recipe", ALL_YAML, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_header_gives_its_command(recipe: Path):
    header = [line for line in recipe.read_text().splitlines() if line.startswith("#")]
    rel = recipe.relative_to(REPO)
    command = rf"lifecycle \w+( sweep)? (--config \S+ )?--(config|sweep) {re.escape(str(rel))}"
    assert any(re.search(command, line) for line in header[:4]), header
    assert any(line.startswith("# Needs:") for line in header)


CPU_FRAGMENTS = {
    # preset: the strategy class and precision it gives, on 2 CPU processes
    "strategies/single.yaml": ("SingleDeviceStrategy", None),
    "strategies/ddp.yaml": ("DDPStrategy", None),
    "strategies/fsdp2.yaml": ("FSDP2Strategy", None),
    "precision/bf16-mixed.yaml": (None, "bf16-mixed"),
    "precision/bf16-true.yaml": (None, "bf16-true"),
}


ACCELERATOR_FRAGMENTS = {
    # preset: the strategy class it builds and the settings that make it that preset
    "strategies/deepspeed_zero2.yaml": ("DeepSpeedStrategy", {"stage": 2}),
    "strategies/deepspeed_zero3.yaml": ("DeepSpeedStrategy", {"stage": 3}),
    "strategies/fsdp.yaml": ("FSDPStrategy", {"_wrap_blocks": True}),
    "strategies/xla.yaml": ("XLAStrategy", {}),
    "precision/16-mixed.yaml": (None, {}),
}


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_strategy_and_precision_presets_combine_with_a_recipe(fragment: Path, tmp_path):
    from lightning.pytorch.strategies import StrategyRegistry

    name = str(fragment.relative_to(REPO / "recipes"))
    config = yaml.safe_load(fragment.read_text())
    assert set(config) == {"trainer"}, "a preset holds trainer settings only"
    if name not in CPU_FRAGMENTS:
        # GPU/TPU presets: running them needs the hardware; what they would build is checked
        strategy, expected = config["trainer"].get("strategy"), ACCELERATOR_FRAGMENTS[name]
        if strategy is None:  # 16-mixed: Lightning turns it into bf16-mixed on a CPU
            from lightning.pytorch.plugins import MixedPrecision

            plugin = MixedPrecision(config["trainer"]["precision"], device="cuda")
            assert plugin.precision == "16-mixed"
            assert isinstance(plugin.scaler, torch.amp.GradScaler)  # fp16 needs loss scaling
        elif isinstance(strategy, str):
            entry = StrategyRegistry[strategy]
            assert entry["strategy"].__name__ == expected[0]
            assert entry["init_params"].items() >= expected[1].items()
        else:
            module, cls = strategy["class_path"].rsplit(".", 1)
            built = getattr(__import__(module, fromlist=[cls]), cls)(
                **strategy.get("init_args", {})
            )
            assert type(built).__name__ == expected[0]
            assert {k: getattr(built, k) for k in expected[1]} == expected[1]
        return
    devices = "1" if "single" in name else "2"
    cli = recipe_cli(
        LifecycleCLI,
        [
            "--config",
            str(REPO / "recipes/digits/classify.yaml"),
            "--config",
            str(fragment),
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            devices,
            "--trainer.default_root_dir",
            str(tmp_path),
        ],  # fmt: skip
    )
    strategy, precision = CPU_FRAGMENTS[name]
    if strategy:
        assert type(cli.trainer.strategy).__name__ == strategy
        assert cli.trainer.num_devices == int(devices)
    if precision:
        assert cli.trainer.precision == precision


def test_a_teacher_checkpoint_with_a_tokenizer_named_in_its_datamodule_hyperparameters_loads(
    tmp_path,
):
    """A text DataModule given a tokenizer by name (``tokenizer: all-MiniLM-L6-v2``) saves that
    name in ``datamodule_hyper_parameters`` beside its state's tokenizer files: the teacher takes
    the files (the tweets lifecycle's distillation stage failed on the name)."""
    from lifecycle.data.tokenization import tokenizer_state, train_tokenizer
    from lifecycle.stages.distillation import load_teacher

    tokenizer = train_tokenizer(["a tweet", "another tweet"] * 20, vocab_size=300)
    path = teacher_checkpoint(
        tmp_path, "recipes/digits/classify.yaml",
        datamodule_hyper_parameters={"tokenizer": "all-MiniLM-L6-v2", "batch_size": 32},
        TextClassificationDataModule={"tokenizer": tokenizer_state(tokenizer)},
    )  # fmt: skip
    teacher = load_teacher(path)
    assert teacher.tokenizer.get_vocab() == tokenizer.get_vocab()


def _header_recipe(path: Path) -> str:
    return re.search(r"--config (recipes/\S+\.yaml)", path.read_text()).group(1)


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_sweep_file_fits_the_recipe_its_header_names(sweep: Path):
    """Every parameter (each choice, both ends of each range) parses with the recipe."""
    pytest.importorskip("optuna")
    from lifecycle.cli import stage_commands
    from lifecycle.pipeline.runner import print_config
    from lifecycle.tuning.space import load_sweep
    from lifecycle.tuning.sweep import check_fields

    commands = stage_commands()
    recipe = ["--config", _header_recipe(sweep)]
    parsed = load_sweep(sweep)
    assert parsed.trials >= 1 and parsed.params
    parses = check_fields(parsed, commands, recipe, print_config(commands, ["fit", *recipe]))
    assert parses == 1 + sum(max(len(p.examples()) - 1, 0) for p in parsed.params)


@pytest.mark.parametrize("tuning", TUNING, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_tuning_section_parses_with_the_recipe_its_header_names(tuning: Path):
    from tests.conftest import run_lifecycle

    args = ["tune", "--config", _header_recipe(tuning), "--config", str(tuning), "--print_config"]
    done = run_lifecycle(args)
    assert done.returncode == 0, done.stderr[-2000:]
    section = yaml.safe_load(done.stdout)["tuning"]
    assert section["class_path"] == "lifecycle.tuning.SweepStage"
    assert (
        section["init_args"]["params"]
        == yaml.safe_load(tuning.read_text())["tuning"]["init_args"]["params"]
    )
