"""``lifecycle tune lr`` and ``lifecycle tune batch-size`` on scikit-learn's digits: the files they
write, the values a recipe then takes, the learning-rate scaling rules, and the several-process
paths (a DDP recipe searched on one device, then trained on 2 processes with the result; ranks
started by a launcher, where rank 0 searches and the others read its result)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from tests.conftest import REPO, run_lifecycle

RECIPE = ["--config", "recipes/digits/classify.yaml", "--data.init_args.num_workers=0"]
LR = "model.init_args.optimizer.init_args.lr"
MAX_LR = "model.init_args.scheduler.init_args.max_lr"


def nested_value(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def resolved(*args) -> dict:
    done = run_lifecycle(["fit", *args, "--print_config"])
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.mark.slow
def test_lr_finder_writes_its_suggestion_as_a_config_the_recipe_takes(tmp_path):
    root = tmp_path / "tune"
    done = run_lifecycle(["tune", "lr", *RECIPE, "--root", root, "--num_training", "40"])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((root / "lr.json").read_text())
    suggestion = result["suggestion"]
    assert f"suggested learning rate: {suggestion:.4g} (searched on one device)" in done.stdout
    assert result["fields"] == {LR: 0.003, MAX_LR: 0.003}  # what the recipe had
    assert 1e-6 <= suggestion <= 1.0 and len(result["lrs"]) == result["steps"] <= 40
    # the suggestion is where the loss falls, not where it has blown up
    losses = [x for x in result["losses"] if x is not None]
    at = result["lrs"].index(min(result["lrs"], key=lambda r: abs(r - suggestion)))
    assert result["losses"][at] < max(losses)
    from lifecycle.tuning.finders import steepest_per_log_step

    assert result["rule"] == "log" and result["lightning_suggestion"] is not None
    assert suggestion == steepest_per_log_step(result["lrs"], result["losses"])
    assert (root / "lr_find.png").stat().st_size > 10_000
    config = resolved(*RECIPE, "--config", root / "lr.yaml")
    assert nested_value(config, LR) == pytest.approx(suggestion)
    assert nested_value(config, MAX_LR) == pytest.approx(suggestion)
    assert "lifecycle fit" in (root / "lr.yaml").read_text().splitlines()[2]  # how to add it


@pytest.mark.slow
def test_batch_size_finder_picks_the_fastest_size_and_scales_the_rate_by_its_rule(tmp_path):
    root = tmp_path / "tune"
    done = run_lifecycle(
        ["tune", "batch-size", *RECIPE, "--root", root, "--min_size", "16", "--max_size", "128",
         "--steps", "4", "--warmup", "1", "--scale_lr", "sqrt"]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((root / "batch_size.json").read_text())
    assert result["mode"] == "throughput" and result["recipe_batch_size"] == 64
    sizes = [row["batch_size"] for row in result["tried"]]
    assert sizes == [16, 32, 64, 128][: len(sizes)] and len(sizes) >= 3
    fastest = max(result["tried"], key=lambda row: row["samples_per_second"])
    assert result["batch_size"] == fastest["batch_size"]
    assert all(row["steps"] == 4 for row in result["tried"])
    factor = math.sqrt(result["batch_size"] / 64)
    assert result["lr"] == {
        LR: pytest.approx(0.003 * factor),
        MAX_LR: pytest.approx(0.003 * factor),
    }
    assert f"batch {fastest['batch_size']:>5}" in done.stdout and "<- chosen" in done.stdout
    config = resolved(*RECIPE, "--config", root / "batch_size.yaml")
    assert nested_value(config, "data.init_args.batch_size") == result["batch_size"]
    assert nested_value(config, LR) == pytest.approx(0.003 * factor)
    assert (root / "batch_size.png").is_file()


def test_the_rates_tuned_are_the_optimizers_lr_and_the_schedulers_max_lr():
    from lifecycle.tuning.finders import lr_fields

    config = {"model": {"init_args": {"optimizer": {"init_args": {"lr": 0.01}},
                                      "scheduler": {"init_args": {"max_lr": 0.02}}}}}  # fmt: skip
    assert lr_fields(config) == {LR: 0.01, MAX_LR: 0.02}
    assert lr_fields({"model": {"init_args": {"optimizer": {"init_args": {}}}}}) == {}


@pytest.mark.slow
def test_a_ddp_recipe_is_searched_on_one_device_and_its_two_ranks_train_with_the_result(tmp_path):
    root = tmp_path / "tune"
    ddp = [*RECIPE, "--config", "recipes/strategies/ddp.yaml", "--trainer.devices=2",
           "--trainer.accelerator=cpu"]  # fmt: skip
    done = run_lifecycle(["tune", "lr", *ddp, "--root", root, "--num_training", "20"])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((root / "lr.json").read_text())
    assert result["searched_on"] == "one device (the recipe: 2 devices x 1 nodes)"
    run = tmp_path / "fit"
    fit = subprocess.run(
        [sys.executable, "-m", "lifecycle", "fit", *ddp, "--config", str(root / "lr.yaml"),
         "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
         "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={run}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    (checkpoint,) = run.rglob("last.ckpt") or run.rglob("*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["hyper_parameters"]["optimizer"]["init_args"]["lr"] == pytest.approx(
        result["suggestion"]
    )


@pytest.mark.slow
def test_under_a_launcher_rank_0_searches_and_the_other_rank_reads_its_result(tmp_path):
    root = tmp_path / "tune"

    def rank(number: int) -> subprocess.Popen:
        env = {**os.environ, "RANK": str(number), "WORLD_SIZE": "2", "LOCAL_RANK": str(number),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999", "OMP_NUM_THREADS": "1"}  # fmt: skip
        return subprocess.Popen(
            [sys.executable, "-m", "lifecycle", "tune", "lr", *RECIPE, "--root", str(root),
             "--num_training", "20"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    second = rank(1)  # started first: it must wait for rank 0's file, not read an old one
    first = rank(0)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    result = json.loads((root / "lr.json").read_text())
    line = f"suggested learning rate: {result['suggestion']:.4g} (searched on one device (the recipe: 2 launched processes))"
    assert line in outs[0][0] and line in outs[1][0]


def test_finder_options_out_of_range_are_named():
    bad_range = run_lifecycle(["tune", "lr", *RECIPE, "--min_lr", "0.1", "--max_lr", "0.01"])
    assert bad_range.returncode == 2
    assert "--min_lr (0.1) must be above 0 and below --max_lr (0.01)" in bad_range.stderr
    bad_rule = run_lifecycle(["tune", "batch-size", *RECIPE, "--scale_lr", "cube"])
    assert bad_rule.returncode == 2 and "invalid choice: 'cube'" in bad_rule.stderr
    assert "Traceback" not in bad_range.stderr + bad_rule.stderr


def test_the_log_rule_finds_the_steepest_fall_per_log_step_where_lightnings_favours_low_rates():
    import numpy as np

    from lifecycle.tuning.finders import steepest_per_log_step

    lrs = np.logspace(-6, 0, 100)
    # a loss that falls fastest per decade at 1e-3 (a logistic step in log10(lr))
    losses = 2.3 - 1.5 / (1 + np.exp(-3 * (np.log10(lrs) + 3)))
    found = steepest_per_log_step(list(lrs), list(losses))
    assert 7e-4 < found < 1.5e-3
    # the gradient against the rate itself (Lightning's suggestion()) lands far lower
    per_rate = lrs[10:-1][np.argmin(np.gradient(losses[10:-1], lrs[10:-1]))]
    assert per_rate < found / 3
    assert steepest_per_log_step([1e-3, 1e-2], [1.0, 0.5]) is None  # too few points
