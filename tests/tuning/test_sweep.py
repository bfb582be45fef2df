"""``lifecycle tune sweep`` end to end on scikit-learn's digits (3 batches an epoch): trials as
run folders, the best as an override file the recipe takes, a failed trial recorded with its
reason while the study goes on, pruning, a killed study resumed, two workers on one SQLite
study, and a field the recipe lacks refused before any trial runs."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from tests.conftest import run_lifecycle

optuna = pytest.importorskip("optuna")

RECIPE = [
    "--config", "recipes/digits/classify.yaml",
    "--trainer.max_epochs=3", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
    "--trainer.log_every_n_steps=1", "--data.init_args.num_workers=0",
]  # fmt: skip
LR = "model.init_args.optimizer.init_args.lr"
MAX_LR = "model.init_args.scheduler.init_args.max_lr"


def write_sweep(path, trials: int, **params) -> str:
    params = params or {LR: {"low": 1e-3, "high": 3e-2, "log": True}, MAX_LR: {"same_as": LR}}
    spec = {"trials": trials, "sampler": "random", "seed": 0, "pruner": "none", "params": params}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def sweep(tmp_path, sweep_file, *extra):
    root = tmp_path / "sweep"
    return root, run_lifecycle(
        ["tune", "sweep", *RECIPE, "--sweep", sweep_file, "--root", str(root), *extra]
    )


def study_of(root):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=root.name, storage=f"sqlite:///{root}/study.db")


def made_study(root, direction="minimize", pruner=None):
    """The sweep's study made before the command runs (to queue or plant trials in it)."""
    root.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(
        study_name=root.name, storage=f"sqlite:///{root}/study.db", direction=direction,
        pruner=pruner,
    )  # fmt: skip


def plant_better_trials(tmp_path) -> None:
    """A study with two finished trials far better at every validation than any the digits
    reach, and a 3-trial median-pruned sweep file: the sweep's one trial is pruned at once."""
    study = made_study(
        tmp_path / "sweep",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    distribution = optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(
            params={LR: 0.01}, distributions={LR: distribution}, value=0.001,
            intermediate_values={1: 0.001, 2: 0.001, 3: 0.001},
        ))  # fmt: skip
    spec = yaml.safe_load(open(write_sweep(tmp_path / "sweep.yaml", 3)))
    spec["pruner"] = "median"
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))


def metric_values(folder, name="val/loss"):
    with open(folder / "metrics.csv", newline="") as handle:
        return [float(r[name]) for r in csv.DictReader(handle) if r.get(name)]


@pytest.mark.slow
def test_a_sweep_runs_its_trials_and_writes_the_best_as_a_config_the_recipe_takes(tmp_path):
    root, done = sweep(tmp_path, write_sweep(tmp_path / "sweep.yaml", 3))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    study = study_of(root)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for trial in trials:
        folder = root / f"trial_{trial.number:04d}" / "version_0"
        config = yaml.safe_load((folder / "config.yaml").read_text())
        optimizer = config["model"]["init_args"]["optimizer"]["init_args"]
        scheduler = config["model"]["init_args"]["scheduler"]["init_args"]
        assert optimizer["lr"] == pytest.approx(trial.params[LR]) == scheduler["max_lr"]
        assert config["test_after_fit"] is False  # a trial never reads the test split
        assert trial.value == pytest.approx(min(metric_values(folder)))
        assert not (folder / "metrics.json").exists()
    best = min(trials, key=lambda t: t.value)
    summary = json.loads((root / "summary.json").read_text())
    assert summary["best"]["number"] == best.number and summary["states"]["complete"] == 3
    assert summary["trials"] == 3
    with open(root / "trials.csv", newline="") as handle:
        assert [int(r["number"]) for r in csv.DictReader(handle)] == [0, 1, 2]
    assert (root / "history.png").stat().st_size > 10_000
    applied = run_lifecycle(
        ["fit", "--config", "recipes/digits/classify.yaml", "--config", root / "best.yaml",
         "--print_config"]
    )  # fmt: skip
    config = yaml.safe_load(applied.stdout)["model"]["init_args"]
    assert config["optimizer"]["init_args"]["lr"] == pytest.approx(best.params[LR])
    assert config["scheduler"]["init_args"]["max_lr"] == pytest.approx(best.params[LR])
    assert config["optimizer"]["class_path"] == "torch.optim.AdamW"  # the recipe's, kept
    table = done.stdout.split("sweep sweep")[1]
    assert f"{best.number} *" in table and "best: trial" in done.stdout


@pytest.mark.slow
def test_a_failed_trial_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path):
    dropout = "model.init_args.backbone.init_args.dropout"
    sweep_file = write_sweep(
        tmp_path / "sweep.yaml", 2, **{dropout: {"choices": {"ok": 0.1, "broken": 1.5}}}
    )
    root = tmp_path / "sweep"
    study = made_study(root)
    study.enqueue_trial({dropout: "broken"})
    study.enqueue_trial({dropout: "ok"})
    root, done = sweep(tmp_path, sweep_file)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    failed, complete = study_of(root).get_trials()
    assert failed.state.name == "FAIL" and complete.state.name == "COMPLETE"
    assert (
        "dropout probability has to be between 0 and 1, but got 1.5" in failed.user_attrs["error"]
    )
    assert "trial 0 [fail]" in done.stdout and "dropout probability" in done.stdout
    summary = json.loads((root / "summary.json").read_text())
    assert summary["states"] == {"complete": 1, "pruned": 0, "fail": 1}
    assert summary["best"]["params"] == {dropout: "ok"}
    assert yaml.safe_load((root / "best.yaml").read_text()) == {
        "model": {"init_args": {"backbone": {"init_args": {"dropout": 0.1}}}}
    }


@pytest.mark.slow
def test_a_trial_worse_than_the_median_is_pruned_after_its_first_validation(tmp_path):
    plant_better_trials(tmp_path)
    root, done = sweep(tmp_path, str(tmp_path / "sweep.yaml"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    trial = study_of(root).get_trials()[2]
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_at"] == 1
    folder = root / "trial_0002" / "version_0"
    pruned = json.loads((folder / "PRUNED").read_text())
    assert pruned["step"] == 1 and pruned["metric"] == "val/loss" and pruned["value"] > 0.001
    assert len(metric_values(folder)) == 1  # it stopped after the first of 3 epochs
    assert not (folder / "FAILED").exists()


@pytest.mark.slow
def test_a_ddp_trial_on_two_processes_is_pruned_by_rank_0_and_both_ranks_stop(tmp_path):
    plant_better_trials(tmp_path)
    ddp = ["--config", "recipes/strategies/ddp.yaml", "--trainer.devices=2",
           "--trainer.accelerator=cpu"]  # fmt: skip
    root, done = sweep(tmp_path, str(tmp_path / "sweep.yaml"), *ddp)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "trials subprocess" in done.stdout  # each trial its own `lifecycle fit`, 2 ranks
    trial = study_of(root).get_trials()[2]
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_at"] == 1
    folder = root / "trial_0002" / "version_0"
    assert json.loads((folder / "PRUNED").read_text())["step"] == 1
    assert len(metric_values(folder)) == 1  # both ranks stopped after the first of 3 epochs
    assert not (folder / "FAILED").exists()


@pytest.mark.slow
def test_a_killed_sweep_resumes_running_only_the_trials_still_missing(tmp_path):
    root = tmp_path / "sweep"
    study = made_study(root)
    left_running = study.ask()  # a worker that was killed in the middle of this trial
    lr = left_running.suggest_float(LR, 1e-3, 3e-2, log=True)
    root, done = sweep(tmp_path, write_sweep(tmp_path / "sweep.yaml", 2))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "trials 0 were left running by a stopped sweep" in done.stdout
    trials = study_of(root).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs["interrupted"] is True
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].params[LR] == pytest.approx(lr)
    assert json.loads((root / "summary.json").read_text())["trials"] == 2
    again = run_lifecycle(
        ["tune", "sweep", *RECIPE, "--sweep", tmp_path / "sweep.yaml", "--root", root]
    )
    assert again.returncode == 0 and len(study_of(root).get_trials()) == 3  # nothing more ran


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_without_losing_or_repeating_a_trial(tmp_path):
    root, done = sweep(
        tmp_path,
        write_sweep(tmp_path / "sweep.yaml", 4),
        "--workers",
        "2",
        "--trainer.max_epochs=1",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    trials = study_of(root).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert len({t.params[LR] for t in trials}) == 4
    folders = sorted(p.name for p in root.glob("trial_*"))
    assert folders == ["trial_0000", "trial_0001", "trial_0002", "trial_0003"]
    assert json.loads((root / "summary.json").read_text())["trials"] == 4


def test_a_field_the_recipe_lacks_is_refused_before_any_trial_runs(tmp_path):
    typo = "model.init_args.optimizer.init_args.lrr"
    root, done = sweep(
        tmp_path, write_sweep(tmp_path / "sweep.yaml", 2, **{typo: {"low": 0.1, "high": 1.0}})
    )
    assert done.returncode == 2
    assert f"params.{typo}" in done.stderr and "Traceback" not in done.stderr
    assert "model.init_args.optimizer.init_args has no `lrr` (did you mean `lr`?)" in done.stderr
    assert not root.exists() or not list(root.glob("trial_*"))
    assert not (root / "study.db").exists()


def test_a_value_the_fields_type_refuses_is_named_before_any_trial_runs(tmp_path):
    hidden = "model.init_args.backbone.init_args.hidden"  # an int: a float range cannot fill it
    spec = {hidden: {"low": 16.5, "high": 64.0}}
    root, done = sweep(tmp_path, write_sweep(tmp_path / "sweep.yaml", 2, **spec))
    assert done.returncode == 2, done.stdout[-2000:]
    assert f"params.{hidden} = 16.5: the recipe refuses it" in done.stderr
    assert "Traceback" not in done.stderr and not (root / "study.db").exists()


def test_tune_without_an_action_or_a_recipe_names_the_fix():
    missing = run_lifecycle(["tune"])
    assert missing.returncode == 2 and "Valid: lr, batch-size, sweep" in missing.stderr
    wrong = run_lifecycle(["tune", "learning-rate", "--config", "recipes/digits/classify.yaml"])
    assert wrong.returncode == 2 and "got `learning-rate`" in wrong.stderr
    no_recipe = run_lifecycle(["tune", "sweep", "--sweep", "x.yaml"])
    assert no_recipe.returncode == 2 and "--config recipes/" in no_recipe.stderr
    no_tuning = run_lifecycle(["tune", "--config", "recipes/digits/classify.yaml"])
    assert no_tuning.returncode == 2 and "needs a `tuning:` section" in no_tuning.stderr
    assert "Traceback" not in missing.stderr + wrong.stderr + no_tuning.stderr
