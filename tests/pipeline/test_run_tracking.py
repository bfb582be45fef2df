"""``lifecycle run --tracking mlflow`` end to end: the pipeline read back through ``MlflowClient``
as a parent run with a nested run per stage (its params, metrics, per-step metrics from
Lightning's MLFlowLogger, the lineage record as an artifact), the final model in the registry
with its lineage as tags, and a cached re-run recorded as such."""

import json

import pytest

from tests.pipeline.pipeline_helpers import record, run_pipeline, tiny_stages, write_pipeline

pytestmark = pytest.mark.slow


def test_a_tracked_pipeline_reads_back_from_mlflow(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    stages = tiny_stages()
    del stages["distill"]
    stages["train"]["overrides"]["trainer.log_every_n_steps"] = 1  # per-step metrics to see
    root = tmp_path / "run"
    recipe = write_pipeline(tmp_path / "pipeline.yaml", root, stages, registered_model="digits-cnn")
    first = run_pipeline(recipe, "--tracking", "mlflow")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    again = run_pipeline(recipe, "--tracking", "mlflow")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("run")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    for parent in parents:
        children = {
            r.info.run_name: r
            for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        }
        assert set(children) == {"clean", "train"}
    newest = max(parents, key=lambda r: r.info.start_time)
    oldest = min(parents, key=lambda r: r.info.start_time)
    train_record = record(root, "train", 0)
    by_parent = {
        p.info.run_id: {
            r.info.run_name: r
            for r in runs
            if r.data.tags.get("mlflow.parentRunId") == p.info.run_id
        }
        for p in parents
    }
    ran, cached = by_parent[oldest.info.run_id]["train"], by_parent[newest.info.run_id]["train"]
    assert ran.data.tags["cached"] == "false" and cached.data.tags["cached"] == "true"
    assert (
        ran.data.tags["fingerprint"]
        == cached.data.tags["fingerprint"]
        == train_record["fingerprint"]
    )
    assert ran.data.metrics["test/accuracy"] == pytest.approx(
        train_record["metrics"]["test/accuracy"]
    )
    assert ran.data.params["trainer.max_epochs"] == "2"
    # per-step metrics came through Lightning's MLFlowLogger into the stage's nested run
    history = client.get_metric_history(ran.info.run_id, "train/loss")
    assert len(history) >= 2, [h.step for h in history]
    artifacts = {a.path for a in client.list_artifacts(ran.info.run_id)}
    assert {"lineage.json", "config.yaml", "metrics.json"} <= artifacts
    lineage = json.loads(open(client.download_artifacts(ran.info.run_id, "lineage.json", str(tmp_path))).read())  # fmt: skip
    assert lineage["fingerprint"] == train_record["fingerprint"]

    versions = client.search_model_versions("name='digits-cnn'")
    assert len(versions) == 2  # one per finished pipeline run
    version = max(versions, key=lambda v: int(v.version))
    assert version.tags["stage"] == "train"
    assert version.tags["fingerprint"] == train_record["fingerprint"]
    assert version.tags["input.data.init_args.cleaned_manifest"].startswith(
        "clean.manifest sha256:"
    )
    assert json.loads(version.tags["lineage"])["stage"] == "train"
    assert mlflow.__version__
