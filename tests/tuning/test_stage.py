"""The sweep as a pipeline stage: ``clean -> tune -> train`` on scikit-learn's digits. The trials
read the clean stage's manifest (its output, not recomputed), the best trial's settings reach
the next stage through ``inputs: {config: tune.best}``, a second run is all cached, and a
changed search re-runs ``tune`` and what follows it only."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.pipeline.pipeline_helpers import (
    CLEAN,
    TRAIN,
    plan_rows,
    record,
    run_pipeline,
    squeezed,
    write_pipeline,
)

pytest.importorskip("optuna")

LR = "model.init_args.optimizer.init_args.lr"
TUNE = {
    "command": "tune",
    "config": ["recipes/digits/classify.yaml", "recipes/digits/tune.yaml"],
    "inputs": {"data.init_args.cleaned_manifest": "clean.manifest"},
    "overrides": {
        "tuning.init_args.trials": 2,
        "tuning.init_args.sampler": "random",
        "tuning.init_args.pruner": "none",
        "trainer.max_epochs": 2,
        "trainer.limit_train_batches": 3,
        "trainer.limit_val_batches": 1,
        "data.init_args.num_workers": 0,
    },
}


def nested(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def stages() -> dict:
    train = copy.deepcopy(TRAIN)
    train["inputs"]["config"] = "tune.best"
    return {"clean": copy.deepcopy(CLEAN), "tune": copy.deepcopy(TUNE), "train": train}


@pytest.mark.slow
def test_a_tune_stage_feeds_its_best_settings_on_and_its_trials_reuse_the_cleaned_data(tmp_path):
    root = tmp_path / "pipe"
    recipe = write_pipeline(tmp_path / "pipeline.yaml", root, stages())
    first = run_pipeline(recipe)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    manifest = record(root, "clean", 0)["outputs"]["manifest"]["path"]
    tune = root / "tune" / "version_0"
    trials = sorted(tune.glob("trial_*/version_0/config.yaml"))
    assert len(trials) == 2
    for config_file in trials:  # every trial trains on the clean stage's output
        config = yaml.safe_load(config_file.read_text())
        assert nested(config, "data.init_args.cleaned_manifest") == manifest
    assert record(root, "tune", 0)["command"] == "tune"
    outputs = record(root, "tune", 0)["outputs"]
    assert {"best", "trials", "summary"} <= set(outputs)
    best = yaml.safe_load((tune / "best.yaml").read_text())
    best_lr = nested(best, LR)
    train_config = yaml.safe_load((root / "train" / "version_0" / "config.yaml").read_text())
    assert nested(train_config, LR) == pytest.approx(best_lr)  # the tuned rate was trained
    assert record(root, "train", 0)["inputs"]["config"]["stage"] == "tune"

    again = run_pipeline(recipe)
    assert again.returncode == 0, again.stderr[-2000:]
    for stage in ("clean", "tune", "train"):
        assert f"── stage {stage}: cached" in again.stdout, again.stdout[-2000:]

    changed = stages()
    changed["tune"]["overrides"]["tuning.init_args.seed"] = 1
    plan = run_pipeline(write_pipeline(tmp_path / "changed.yaml", root, changed), "--dry-run")
    assert plan.returncode == 0, plan.stderr[-2000:]
    rows = plan_rows(plan.stdout)
    assert rows["clean"][2] == "cached"
    assert rows["tune"][2] == "run" and squeezed("tuning.init_args.seed 0 -> 1") in rows["tune"][4]
    assert rows["train"][2] == "run" and squeezed("`tune` runs first") in rows["train"][4]


def test_config_takes_only_a_config_output(tmp_path):
    wrong = stages()
    wrong["train"]["inputs"]["config"] = "tune.trials"
    done = run_pipeline(write_pipeline(tmp_path / "p.yaml", tmp_path / "pipe", wrong), "--dry-run")
    assert done.returncode == 2
    assert "input `config: tune.trials`: `config` takes a config file to add" in done.stderr
    assert "`tune.trials` is a file (trials.csv)" in done.stderr
