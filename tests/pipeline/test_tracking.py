"""MLflow tracking of a pipeline: a parent run with one nested run per stage (params, tags,
metrics, artifacts from the lineage record and run folder; Lightning's per-step metrics through
``stage_loggers``), the final checkpoint as a registered model version tagged with its lineage,
and a message naming the fix when mlflow is not installed. Everything lies under tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from lifecycle.errors import ConfigError
from lifecycle.pipeline.tracking import (
    RUN_ID_ENV,
    TRACKING_URI_ENV,
    MlflowTracker,
    kept_tracking_uri,
    mlflow_key,
    stage_loggers,
)

RECIPE = {
    "root": "runs/toy",
    "tracking": "mlflow",
    "stages": {
        "clean": {"command": "clean", "config": "recipes/toy/clean.yaml"},
        "train": {
            "command": "fit",
            "config": ["recipes/toy/fit.yaml", "recipes/strategies/ddp.yaml"],
            "inputs": {"data.init_args.cleaned_manifest": "clean.manifest"},
        },
    },
}


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An MLflow SQLite database with its tables made (MLflow's migrations take seconds), for
    each test to copy where its tracker looks."""
    mlflow = pytest.importorskip("mlflow")
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path.as_posix()}").search_experiments()
    return path


def clean_record(folder) -> dict:
    return {
        "format": "lifecycle.lineage",
        "version": 1,
        "pipeline": {"name": "toy", "root": "runs/toy", "recipe": "recipes/toy/lifecycle.yaml"},
        "stage": "clean",
        "command": "clean",
        "status": "finished",
        "folder": str(folder),
        "config": {
            "cleaning.subset": 100,
            "cleaning.methods": ["duplicates", "labels"],
            "data.init_args.root": None,
            "trainer.callbacks[0].class_path": "x.Y",
            "long.value": "v" * 7000,
        },
        "config_hash": "sha256:c1",
        "fingerprint": "sha256:f1",
        "code": {"git_commit": "abc123", "git_dirty": False, "source_hash": "sha256:s1"},
        "versions": {"torch": "2.13.0"},
        "outputs": {"manifest": {"path": f"{folder}/manifest.csv", "hash": "sha256:m1"}},
        "seconds": 1.5,
        "metrics": {"clean/removed": 3, "clean/kept": 97.0, "note": "text is no metric"},
    }


def write_folder(folder) -> None:
    folder.mkdir(parents=True)
    (folder / "lineage.json").write_text("{}")
    (folder / "config.yaml").write_text("cleaning: {subset: 100}\n")
    (folder / "metrics.json").write_text('{"clean/kept": 97}')
    (folder / "manifest.csv").write_text("path,label\na.png,0\n")
    (folder / "class_balance.png").write_bytes(b"\x89PNG")
    (folder / "removed.csv").write_text("not an artifact")


def artifact_names(client, run_id, path=None) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, path)}


def test_a_pipeline_becomes_a_parent_run_with_a_nested_run_per_stage_and_a_model_version(
    tmp_path, monkeypatch, empty_store
):
    mlflow = pytest.importorskip("mlflow")
    import torch
    from lightning.pytorch.demos.boring_classes import BoringModel

    from tests.conftest import quiet_trainer

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    before = set(os.listdir())
    root = tmp_path / "toy"
    root.mkdir()
    shutil.copy(empty_store, root / "mlflow.db")
    tracker = MlflowTracker(root)
    assert tracker.tracking_uri == f"sqlite:///{(root / 'mlflow.db').resolve().as_posix()}"
    parent = tracker.start_pipeline("toy", RECIPE)

    # stage 1: a record and its folder
    clean_env = tracker.start_stage("clean", "clean")
    clean_folder = root / "clean" / "version_0"
    write_folder(clean_folder)
    tracker.end_stage("clean", clean_record(clean_folder), clean_folder)

    # stage 2: a real training that logs by step through stage_loggers
    env = tracker.start_stage("train", "fit")
    assert (
        env[TRACKING_URI_ENV] == tracker.tracking_uri and env[RUN_ID_ENV] != clean_env[RUN_ID_ENV]
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    class LoggingModel(BoringModel):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            self.log("train_loss", out["loss"])
            return out

    loggers = stage_loggers()
    assert [type(lg).__name__ for lg in loggers] == ["MLFlowLogger"]
    trainer = quiet_trainer(
        tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=1, log_every_n_steps=1,
        logger=loggers,
    )  # fmt: skip
    with kept_tracking_uri():  # as the runner runs an in-process stage
        trainer.fit(LoggingModel())
        assert os.environ["MLFLOW_TRACKING_URI"] == tracker.tracking_uri  # MLFlowLogger set it
    # ... and the next pipeline of this process does not inherit the store
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() != tracker.tracking_uri
    checkpoint = root / "train" / "version_0" / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    train_record = {
        "stage": "train",
        "command": "fit",
        "status": "finished",
        "config": {"trainer.max_epochs": 2, "model.class_path": "BoringModel"},
        "config_hash": "sha256:c2",
        "fingerprint": "sha256:f2",
        "code": {"git_commit": "abc123", "source_hash": "sha256:s1"},
        "inputs": {
            "data.init_args.cleaned_manifest": {"from": "clean.manifest", "hash": "sha256:m1"}
        },
        "metrics": {"val/loss": 0.5, "train_loss": 123.0},
        "seconds": 2.0,
    }
    tracker.end_stage("train", train_record, checkpoint.parent.parent)
    name, version = tracker.register_model("train", checkpoint, train_record)
    tracker.finish("finished")

    client = mlflow.MlflowClient(tracker.tracking_uri)
    runs = client.search_runs([tracker.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"toy", "clean", "train"}
    assert by_name["toy"].info.run_id == parent and by_name["toy"].info.status == "FINISHED"
    for stage in ("clean", "train"):
        assert by_name[stage].data.tags["mlflow.parentRunId"] == parent
        assert by_name[stage].info.status == "FINISHED"
    experiment = client.get_experiment(tracker.experiment_id)
    assert experiment.name == "toy"
    assert experiment.artifact_location == (root / "mlartifacts").resolve().as_uri()

    # the parent: the recipe as params and pipeline.yaml, the stages' metrics
    top = by_name["toy"].data
    assert top.params["stages.clean.command"] == "clean"
    assert json.loads(top.params["stages.train.config"]) == RECIPE["stages"]["train"]["config"]
    assert "pipeline.yaml" in artifact_names(client, parent)
    assert top.metrics["clean/clean/kept"] == 97.0 and top.metrics["train/seconds"] == 2.0

    # stage 1: what its record gave
    clean = by_name["clean"].data
    assert clean.params["cleaning.subset"] == "100"
    assert json.loads(clean.params["cleaning.methods"]) == ["duplicates", "labels"]
    assert clean.params["data.init_args.root"] == "null"
    assert clean.params["trainer.callbacks_0_.class_path"] == "x.Y"
    assert len(clean.params["long.value"]) == 6000
    assert clean.metrics == {"clean/removed": 3.0, "clean/kept": 97.0, "seconds": 1.5}
    expected_tags = {
        "stage": "clean",
        "command": "clean",
        "status": "finished",
        "cached": "false",
        "config_hash": "sha256:c1",
        "fingerprint": "sha256:f1",
        "git_commit": "abc123",
        "git_dirty": "false",
        "source_hash": "sha256:s1",
        "versions.torch": "2.13.0",
        "output.manifest": "sha256:m1",
    }
    assert {k: clean.tags.get(k) for k in expected_tags} == expected_tags
    assert artifact_names(client, by_name["clean"].info.run_id) == {
        "lineage.json",
        "config.yaml",
        "metrics.json",
        "manifest.csv",
        "class_balance.png",
    }

    # stage 2: Lightning's metrics by step, the record's, its input and the model
    train_id = by_name["train"].info.run_id
    history = client.get_metric_history(train_id, "train_loss")
    # six steps from Lightning, then the record's final value at the last step
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4, 5, 5]
    assert by_name["train"].data.metrics["train_loss"] == 123.0
    assert by_name["train"].data.metrics["val/loss"] == 0.5
    assert by_name["train"].data.tags["input.data.init_args.cleaned_manifest"] == (
        "clean.manifest sha256:m1"
    )
    assert by_name["train"].data.tags["registered_model"] == f"toy/{version}"
    assert artifact_names(client, train_id, "model") == {"model/last.ckpt"}

    assert (name, version) == ("toy", "1")
    model_version = client.get_model_version(name, version)
    assert model_version.run_id == train_id
    assert model_version.source == f"{by_name['train'].info.artifact_uri}/model/last.ckpt"
    assert {k: model_version.tags[k] for k in ("stage", "config_hash", "fingerprint")} == {
        "stage": "train",
        "config_hash": "sha256:c2",
        "fingerprint": "sha256:f2",
    }
    assert model_version.tags["git_commit"] == "abc123"
    assert model_version.tags["source_hash"] == "sha256:s1"
    assert model_version.tags["input.data.init_args.cleaned_manifest"] == (
        "clean.manifest sha256:m1"
    )
    assert json.loads(model_version.tags["lineage"]) == train_record
    downloaded = client.download_artifacts(train_id, "model/last.ckpt", str(tmp_path / "dl"))
    assert torch.load(downloaded, weights_only=False)["state_dict"].keys() == (
        torch.load(checkpoint, weights_only=False)["state_dict"].keys()
    )

    assert set(os.listdir()) - before == set(), "MLflow wrote into the working directory"


def test_a_cached_stage_gets_its_own_nested_run_with_its_records_metrics(
    tmp_path, monkeypatch, empty_store
):
    mlflow = pytest.importorskip("mlflow")
    before = set(os.listdir())
    database = tmp_path / "elsewhere" / "runs.db"
    database.parent.mkdir()
    shutil.copy(empty_store, database)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database.as_posix()}")
    tracker = MlflowTracker(tmp_path / "p", experiment="exp", registered_model="m")
    assert tracker.tracking_uri == f"sqlite:///{database.as_posix()}"
    parent = tracker.start_pipeline("pipe", {"stages": {}})
    folder = tmp_path / "p" / "clean" / "version_0"
    write_folder(folder)
    record = {**clean_record(folder), "cached": True}
    tracker.end_stage("clean", record, folder)  # not started: the runner skipped it
    failed = {**clean_record(folder), "stage": "evaluate", "status": "failed"}
    failed["error"] = {"type": "lifecycle.errors.ConfigError", "message": "bad field"}
    tracker.start_stage("evaluate", "test")
    tracker.end_stage("evaluate", failed, tmp_path / "missing")
    tracker.start_stage("left_open", "fit")
    tracker.finish("failed")

    client = mlflow.MlflowClient(tracker.tracking_uri)
    runs = {r.info.run_name: r for r in client.search_runs([tracker.experiment_id])}
    assert client.get_experiment(tracker.experiment_id).name == "exp"
    assert runs["pipe"].info.run_id == parent and runs["pipe"].info.status == "FAILED"
    cached = runs["clean"]
    assert cached.data.tags["mlflow.parentRunId"] == parent
    assert cached.data.tags["cached"] == "true" and cached.info.status == "FINISHED"
    assert cached.data.metrics["clean/kept"] == 97.0
    assert runs["evaluate"].info.status == "FAILED"
    assert runs["evaluate"].data.tags["error.message"] == "bad field"
    assert runs["left_open"].info.status == "FAILED"
    # another SQLite store keeps its artifacts beside it, not in the working directory
    artifacts = client.get_experiment(tracker.experiment_id).artifact_location
    assert artifacts == (database.parent / "mlartifacts").as_uri()
    assert artifact_names(client, cached.info.run_id) >= {"lineage.json", "manifest.csv"}
    assert (database.parent / "mlartifacts").is_dir()
    assert set(os.listdir()) - before == set(), "MLflow wrote into the working directory"


def test_keys_become_names_mlflow_accepts():
    assert mlflow_key("model.init_args.lr") == "model.init_args.lr"
    assert mlflow_key("a[0]=b:c") == "a_0__b_c"
    assert mlflow_key("/a//../b/") == "a/_/b"
    long = mlflow_key("k" * 300)
    assert len(long) == 250 and long != mlflow_key("k" * 301)
    assert mlflow_key(long) == long


def test_without_mlflow_tracking_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[tracking\]"'):
        MlflowTracker(tmp_path)
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    assert stage_loggers() == []  # an untracked stage needs no mlflow
    monkeypatch.setenv(RUN_ID_ENV, "abc")
    with pytest.raises(ConfigError, match="tracking"):
        stage_loggers()
