"""``lifecycle run`` end to end on a tiny pipeline (clean, train, distill on the 8x8 digits): the
stage folders and their lineage records, the cache (an identical run runs nothing, a changed
field re-runs the stages it reaches and says why), ``--force``/``--until``/``--from``, a stage
that fails, a pipeline killed mid-stage that resumes to the metrics of one never interrupted,
and a stage trained on two processes.

Cases 1-4 share one pipeline folder, built once (the ``first`` fixture), in file order."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lifecycle.pipeline.lineage import content_hash, read_record
from tests.conftest import REPO
from tests.pipeline.pipeline_helpers import (
    env,
    plan_rows,
    record,
    run_pipeline,
    squeezed,
    tiny_stages,
    versions,
    write_pipeline,
)

pytestmark = pytest.mark.slow

STAGES = ["clean", "train", "distill"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """The tiny pipeline run once into a fresh folder; its records as they were then."""
    folder = tmp_path_factory.mktemp("pipeline")
    root = folder / "run"
    recipe = write_pipeline(folder / "pipeline.yaml", root, tiny_stages())
    run = run_pipeline(recipe)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    records = {stage: record(root, stage, 0) for stage in STAGES}
    return SimpleNamespace(folder=folder, root=root, recipe=recipe, run=run, records=records)


def _new_folders(before: dict, after: dict) -> dict[str, list[str]]:
    return {s: sorted(set(v) - set(before.get(s, []))) for s, v in after.items() if set(v) - set(before.get(s, []))}  # fmt: skip


def _version(name: str) -> int:
    return int(name.split("_", 1)[1])


# ------------------------------------------------------------------------------- 1. first run
def test_a_first_run_writes_each_stage_folder_with_its_lineage_record(first):
    root, records = first.root, first.records
    assert versions(root) == {stage: ["version_0"] for stage in STAGES}
    for stage in STAGES:
        assert f"── stage {stage}: runs: no earlier run" in first.run.stdout
        rec = records[stage]
        assert rec["format"] == "lifecycle.lineage" and rec["status"] == "finished"
        assert rec["stage"] == stage and rec["folder"] == str(root / stage / "version_0")
        assert rec["pipeline"] == {"name": "run", "root": str(root), "recipe": str(first.recipe)}
        assert rec["fingerprint"].startswith("sha256:") and rec["launch"] == "inprocess"
        assert rec["attempts"] == 1 and rec["resumed_from"] is None
        assert rec["outputs"], stage
        for name, output in rec["outputs"].items():
            path = Path(output["path"])
            assert path.parent == root / stage / "version_0" or path.parent.name == "checkpoints"
            assert output["hash"].startswith("sha256:") and output["hash"] == content_hash(path), (
                name
            )
    assert records["clean"]["command"] == "clean" and "manifest" in records["clean"]["outputs"]
    assert records["clean"]["metrics"] == {"records": 200.0, "kept": 200.0, "removed": 0.0}
    assert records["train"]["model"]["class"].endswith("ClassificationModule")

    # each input is an upstream output: its path, its hash, its folder
    for stage, field, ref in [
        ("train", "data.init_args.cleaned_manifest", "clean.manifest"),
        ("distill", "model.init_args.teacher", "train.best_checkpoint"),
    ]:
        upstream, output = ref.split(".")
        given = records[stage]["inputs"][field]
        written = records[upstream]["outputs"][output]
        assert given["from"] == ref and given["stage"] == upstream and given["output"] == output
        assert given["path"] == written["path"] and given["hash"] == written["hash"]
        assert given["folder"] == str(root / upstream / "version_0")
    teacher = records["train"]["outputs"]["best_checkpoint"]["path"]
    assert Path(teacher).name.startswith("best-") and teacher.endswith(".ckpt")
    # the path reached the command (its config.yaml); the record keeps the input, not the path
    config = (root / "distill" / "version_0" / "config.yaml").read_text()
    assert f"path: {teacher}" in config
    assert records["distill"]["config"]["model.init_args.teacher.init_args.path"] == (
        "<input train.best_checkpoint>"
    )
    assert records["distill"]["config"]["model.init_args.temperature"] == 4.0

    # the headline metrics are the run's own
    report = json.loads((root / "distill" / "version_0" / "metrics.json").read_text())
    assert records["distill"]["metrics"]["test/accuracy"] == report["metrics"]["accuracy"]
    assert 0.0 <= records["distill"]["metrics"]["val/loss"] < 10

    # the checkpoint carries the record of the run that wrote it
    best = Path(records["distill"]["outputs"]["best_checkpoint"]["path"])
    embedded = read_record(best)
    assert embedded["fingerprint"] == records["distill"]["fingerprint"]
    assert embedded["stage"] == "distill" and embedded["inputs"] == records["distill"]["inputs"]

    pipeline = json.loads((root / "pipeline.json").read_text())
    assert pipeline["status"] == "finished" and pipeline["order"] == STAGES
    assert {s: (v["action"], v["version"]) for s, v in pipeline["stages"].items()} == {
        stage: ("run", 0) for stage in STAGES
    }
    assert pipeline["stages"]["distill"]["inputs"] == {"model.init_args.teacher": "train.best_checkpoint"}  # fmt: skip


# ---------------------------------------------------------------------------- 2. all cached
def test_an_identical_run_runs_no_stage(first):
    run = run_pipeline(first.recipe)
    assert run.returncode == 0, run.stderr
    for stage in STAGES:
        assert f"── stage {stage}: cached (version_0)" in run.stdout
        assert record(first.root, stage, 0) == first.records[stage]  # untouched
    assert "runs:" not in run.stdout and "lifecycle fit --config" not in run.stdout
    assert versions(first.root) == {stage: ["version_0"] for stage in STAGES}
    pipeline = json.loads((first.root / "pipeline.json").read_text())
    assert {s: v["action"] for s, v in pipeline["stages"].items()} == dict.fromkeys(
        STAGES, "cached"
    )


# ---------------------------------------------------------------------- 3. one field changed
def test_a_changed_field_reruns_only_its_stage_and_says_why(first):
    stages = tiny_stages()
    stages["distill"]["overrides"]["model.init_args.temperature"] = 2.0
    recipe = write_pipeline(first.folder / "temperature.yaml", first.root, stages)

    dry = run_pipeline(recipe, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    rows = plan_rows(dry.stdout)
    for stage in ("clean", "train"):
        assert rows[stage][2:] == [
            "cached",
            squeezed(str(first.root / stage / "version_0")),
            squeezed("cached: the same fingerprint finished in version_0"),
        ]
    assert rows["distill"][2:] == [
        "run",
        squeezed(str(first.root / "distill" / "version_1")),
        squeezed("config changed: model.init_args.temperature 4.0 -> 2.0"),
    ]
    assert versions(first.root) == {stage: ["version_0"] for stage in STAGES}

    before = versions(first.root)
    run = run_pipeline(recipe)
    assert run.returncode == 0, run.stderr
    assert "── stage distill: runs: config changed: model.init_args.temperature 4.0 -> 2.0" in run.stdout  # fmt: skip
    assert _new_folders(before, versions(first.root)) == {"distill": ["version_1"]}
    changed = record(first.root, "distill", 1)
    assert changed["status"] == "finished"
    assert changed["config"]["model.init_args.temperature"] == 2.0
    assert changed["inputs"] == first.records["distill"]["inputs"]  # the same teacher
    assert changed["fingerprint"] != first.records["distill"]["fingerprint"]


# ------------------------------------------------------------------ 4. --force, --until, --from
def test_force_until_and_from_choose_what_runs(first):
    root = first.root
    before = versions(root)
    forced = run_pipeline(first.recipe, "--force", "train")
    assert forced.returncode == 0, forced.stderr
    new = _new_folders(before, versions(root))
    assert sorted(new) == ["distill", "train"] and all(len(v) == 1 for v in new.values())
    assert "── stage clean: cached (version_0)" in forced.stdout
    assert "── stage train: runs: forced (--force)" in forced.stdout
    line = next(x for x in forced.stdout.splitlines() if x.startswith("── stage distill: runs: "))
    assert "input changed: train.best_checkpoint" in line
    train_version, distill_version = _version(new["train"][0]), _version(new["distill"][0])
    train, distill = record(root, "train", train_version), record(root, "distill", distill_version)
    assert train["status"] == distill["status"] == "finished"
    assert train["config"] == first.records["train"]["config"]  # forced, not changed
    teacher = distill["inputs"]["model.init_args.teacher"]
    assert teacher["folder"] == str(root / "train" / f"version_{train_version}")
    assert teacher["hash"] == train["outputs"]["best_checkpoint"]["hash"]

    before = versions(root)
    until = run_pipeline(first.recipe, "--until", "train")
    assert until.returncode == 0, until.stderr
    assert versions(root) == before  # nothing ran
    assert "── stage clean: cached" in until.stdout and "── stage train: cached" in until.stdout
    assert "── stage distill: skipped (left out by --until/--from)" in until.stdout

    start = run_pipeline(first.recipe, "--from", "distill")
    assert start.returncode == 0, start.stderr
    new = _new_folders(before, versions(root))
    assert list(new) == ["distill"] and len(new["distill"]) == 1
    assert "── stage train: cached" in start.stdout
    assert "── stage distill: runs: forced (--from distill)" in start.stdout
    again = record(root, "distill", _version(new["distill"][0]))
    assert again["status"] == "finished" and again["fingerprint"] == distill["fingerprint"]


# ---------------------------------------------------------------------------- 5. a failure
def test_a_stage_that_fails_is_marked_failed_and_nothing_after_it_runs(tmp_path):
    stages = tiny_stages()
    del stages["clean"]
    stages["train"]["inputs"] = {}
    # no validation in 2 epochs: no best checkpoint, which distill takes
    stages["train"]["overrides"]["trainer.check_val_every_n_epoch"] = 5
    root = tmp_path / "run"
    run = run_pipeline(write_pipeline(tmp_path / "pipeline.yaml", root, stages))
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr
    assert run.stderr.startswith("lifecycle run: error: ") and "Traceback" not in run.stderr
    assert "stage `train` finished without writing `best_checkpoint`" in run.stderr
    assert "check_val_every_n_epoch <= max_epochs" in run.stderr
    failed = record(root, "train", 0)
    assert failed["status"] == "failed"
    assert failed["error"]["type"].endswith("StageFailed")
    assert "`best_checkpoint`" in failed["error"]["message"]
    assert failed["ended"] and "outputs" not in failed
    assert versions(root) == {"train": ["version_0"]}  # distill never started
    assert json.loads((root / "pipeline.json").read_text())["status"] == "failed"


# ------------------------------------------------------------------------ 6. kill and resume
def _lifecycle_run(recipe: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", "run", "--config", str(recipe)],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_a_killed_pipeline_resumes_to_the_metrics_of_an_uninterrupted_one(tmp_path):
    mark = tmp_path / "killed.txt"
    stages = tiny_stages()
    stages["train"]["overrides"].update({
        "trainer.max_epochs": 3,
        # last-step.ckpt every 2 steps; killed when step 5 (of 9) starts, mid-epoch 2
        "trainer.callbacks": [
            {"class_path": "lifecycle.training.ResumableCheckpoint",
             "init_args": {"every_n_train_steps": 2}},
            {"class_path": "tests.pipeline.pipeline_helpers.KillOnce",
             "init_args": {"step": 4, "mark": str(mark)}},
        ],
    })  # fmt: skip
    killed_root, whole_root = tmp_path / "killed", tmp_path / "whole"
    recipe = write_pipeline(tmp_path / "killed.yaml", killed_root, stages)

    killed = _lifecycle_run(recipe)
    assert killed.returncode == -9, killed.stdout[-3000:] + killed.stderr
    assert mark.read_text() == "4"  # the kill, not a crash
    assert record(killed_root, "clean", 0)["status"] == "finished"
    assert record(killed_root, "train", 0)["status"] == "running"
    assert not (killed_root / "distill").exists()

    resumed = _lifecycle_run(recipe)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr
    assert "── stage clean: cached (version_0)" in resumed.stdout
    assert "── stage train: resumes: resumes version_0, interrupted, from its checkpoint last-step.ckpt" in resumed.stdout  # fmt: skip
    assert "--ckpt_path=last" in resumed.stdout
    assert versions(killed_root) == {stage: ["version_0"] for stage in STAGES}
    train = record(killed_root, "train", 0)
    assert train["status"] == "finished" and train["attempts"] == 2
    assert train["resumed_from"] == str(killed_root / "train" / "version_0" / "checkpoints" / "last-step.ckpt")  # fmt: skip

    # the reference, never interrupted: in this process (a fresh process is what the killed
    # and the resumed runs needed)
    whole = run_pipeline(write_pipeline(tmp_path / "whole.yaml", whole_root, stages))
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr
    assert record(whole_root, "train", 0)["attempts"] == 1
    for stage in STAGES:
        assert record(killed_root, stage, 0)["metrics"] == record(whole_root, stage, 0)["metrics"], stage  # fmt: skip
    assert record(killed_root, "distill", 0)["metrics"]["test/accuracy"] > 0
    # and the teacher's weights are the same to the bit
    weights = [
        torch.load(record(r, "train", 0)["outputs"]["best_checkpoint"]["path"], weights_only=False)[
            "state_dict"
        ]  # fmt: skip
        for r in (killed_root, whole_root)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# ---------------------------------------------------------------------- 7. two processes
def test_a_stage_on_two_processes_runs_as_a_subprocess_and_hands_on_its_backbone(tmp_path):
    tiny = {
        "data.init_args.dataset": "digits",
        "data.init_args.num_workers": 0,
        "trainer.max_epochs": 1,
        "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 1,
        "trainer.precision": "32-true",
        "trainer.enable_progress_bar": False,
    }
    stages = {
        "pretrain": {
            "command": "fit",
            "config": ["recipes/fashion_mnist/pretrain_simclr.yaml", "recipes/strategies/ddp.yaml"],
            "overrides": {
                **tiny,
                "trainer.accelerator": "cpu",
                "trainer.devices": 2,
                "data.init_args.batch_size": 32,
                "model.init_args.projection_dim": 16,
                "model.init_args.backbone.init_args.channels": [8, 16],
                "model.init_args.backbone.init_args.convs_per_block": 1,
                "model.init_args.backbone.init_args.pool_size": 2,
                "model.init_args.backbone.init_args.hidden": 32,
            },
        },
        "finetune": {
            "command": "fit",
            "config": "recipes/fashion_mnist/finetune_simclr.yaml",
            "inputs": {"model.init_args.backbone": "pretrain.backbone"},
            "overrides": {
                **tiny,
                "data.init_args.train_subset": 100,
                "trainer.check_val_every_n_epoch": 1,
                "trainer.limit_test_batches": 1,
            },
        },
    }
    root = tmp_path / "run"
    run = run_pipeline(write_pipeline(tmp_path / "pipeline.yaml", root, stages))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert versions(root) == {"finetune": ["version_0"], "pretrain": ["version_0"]}
    assert [
        p.relative_to(root / "pretrain") for p in (root / "pretrain").rglob("lineage.json")
    ] == [Path("version_0/lineage.json")]
    pretrain, finetune = record(root, "pretrain", 0), record(root, "finetune", 0)
    assert pretrain["launch"] == "subprocess" and finetune["launch"] == "inprocess"
    assert pretrain["status"] == finetune["status"] == "finished"
    assert int(pretrain["config"]["trainer.devices"]) == 2  # the CLI keeps "2" as given
    assert pretrain["config"]["trainer.strategy.class_path"] == "lifecycle.training.strategies.DDPStrategy"  # fmt: skip
    backbone = pretrain["outputs"]["backbone"]
    assert Path(backbone["path"]) == root / "pretrain" / "version_0" / "pretrained"
    assert backbone["hash"] == content_hash(backbone["path"])
    given = finetune["inputs"]["model.init_args.backbone"]
    assert given["hash"] == backbone["hash"] and given["path"] == backbone["path"]
    assert (
        f"path: {backbone['path']}" in (root / "finetune" / "version_0" / "config.yaml").read_text()
    )
    last = Path(pretrain["outputs"]["checkpoint"]["path"])
    assert read_record(last)["fingerprint"] == pretrain["fingerprint"]
    assert "test/accuracy" in finetune["metrics"]
