"""The lineage record: content and code hashes, flattened configs and their differences, the
record on disk and in checkpoints (LineageCallback on a real one-epoch fit), and the lineage of
a pipeline folder as text, as a picture and as the ``lifecycle lineage`` command."""

import json
import shutil
from pathlib import Path

import pytest

from lifecycle.errors import MissingFileError
from lifecycle.pipeline import lineage
from lifecycle.pipeline.lineage import (
    CHECKPOINT_KEY,
    LINEAGE_FILE,
    LineageCallback,
    code_version,
    config_hash,
    content_hash,
    diff,
    draw_lineage,
    flatten,
    git_state,
    headline_metrics,
    library_versions,
    lineage_command,
    lineage_tree,
    pipeline_records,
    read_record,
    source_hash,
    update_record,
    write_record,
)

# the runs below reuse a run folder on purpose (a runner's record, a resumed run)
pytestmark = [
    pytest.mark.filterwarnings("ignore:Experiment logs directory .* exists"),
    pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty"),
]


# ----------------------------------------------------------------------------- hashes
def test_a_file_hash_is_stable_and_changes_with_the_bytes(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * (3 << 20) + b"tail")  # several 1 MiB chunks
    first = content_hash(path)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert content_hash(path) == first
    import hashlib

    assert first == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(b"x" * (3 << 20) + b"tall")
    assert content_hash(path) != first


def test_a_folder_hash_follows_names_and_contents_not_where_the_folder_is(tmp_path):
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    first = content_hash(folder)
    assert content_hash(folder) == first
    shutil.copytree(folder, tmp_path / "elsewhere")
    assert content_hash(tmp_path / "elsewhere") == first
    (folder / "sub" / "b.txt").write_text("B")
    changed = content_hash(folder)
    assert changed != first
    (folder / "sub" / "b.txt").write_text("b")
    assert content_hash(folder) == first
    (folder / "sub" / "b.txt").rename(folder / "sub" / "c.txt")  # same bytes, new name
    assert content_hash(folder) not in (first, changed)


def test_a_missing_path_has_no_hash_and_the_error_names_it(tmp_path):
    with pytest.raises(MissingFileError, match=r"nowhere does not exist.*Fix:"):
        content_hash(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- code
def test_code_version_names_the_package_the_commit_and_the_source(tmp_path):
    code = code_version()
    assert set(code) == {
        "package_version", "git_commit", "git_dirty", "uncommitted_hash", "source_hash"
    }  # fmt: skip
    import lifecycle

    assert code["package_version"] == lifecycle.__version__
    assert code["source_hash"] == source_hash()
    package = Path(lifecycle.__file__).parent
    if (package.parent / ".git").exists():  # this checkout: the commit is HEAD's
        assert len(code["git_commit"]) == 40 and isinstance(code["git_dirty"], bool)
        assert (code["uncommitted_hash"] is None) == (not code["git_dirty"])
    code["source_hash"] = "changed"
    assert code_version()["source_hash"] == source_hash()  # callers get a copy
    assert git_state(tmp_path / "lifecycle") == {
        "git_commit": None, "git_dirty": None, "uncommitted_hash": None
    }  # fmt: skip


def test_the_source_hash_changes_when_a_file_of_the_package_changes(tmp_path):
    import lifecycle

    copy = tmp_path / "lifecycle"
    shutil.copytree(
        Path(lifecycle.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    first = source_hash(copy)
    assert first == source_hash(Path(lifecycle.__file__).parent)
    (copy / "notes.txt").write_text("not python")
    assert source_hash(copy) == first
    errors = copy / "errors.py"
    errors.write_text(errors.read_text() + "\n# a comment\n")
    assert source_hash(copy) != first


def test_library_versions_list_python_and_the_installed_libraries():
    import platform

    import lightning
    import torch

    versions = library_versions()
    assert versions["python"] == platform.python_version()
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert versions["lightning"] == lightning.__version__
    assert set(versions) <= {"python", *lineage.LIBRARIES}


# ----------------------------------------------------------------------------- configs
def test_flatten_gives_dotted_keys_and_keeps_lists():
    config = {"model": {"init_args": {"lr": 1, "widths": [8, 16]}}, "seed": 0, "empty": {}}
    assert flatten(config) == {
        "model.init_args.lr": 1, "model.init_args.widths": [8, 16], "seed": 0, "empty": {}
    }  # fmt: skip
    assert flatten({"a": {"b": 2}}, prefix="x.") == {"x.a.b": 2}


def test_diff_lists_changes_additions_and_removals_by_key():
    old = {"model.init_args.temperature": 4.0, "x": 1, "same": [1, 2]}
    new = {"model.init_args.temperature": 2.0, "trainer.max_epochs": 3, "same": (1, 2)}
    assert diff(old, new) == [
        "model.init_args.temperature 4.0 -> 2.0",
        "trainer.max_epochs added (3)",
        "x removed (was 1)",
    ]
    assert diff(new, new) == []
    assert diff({"data.path": "a.csv"}, {"data.path": None}) == ["data.path a.csv -> null"]


def test_config_hash_does_not_depend_on_key_order():
    assert config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert config_hash({"p": Path("x")}) == config_hash({"p": "x"})


# ----------------------------------------------------------------------------- files
def test_a_record_round_trips_through_its_folder_and_leaves_no_temporary_file(tmp_path):
    record = {"format": "lifecycle.lineage", "version": 1, "stage": "s", "config": {"a.b": 1}}
    path = write_record(tmp_path / "run" / "version_0", record)
    assert path == tmp_path / "run" / "version_0" / LINEAGE_FILE
    assert sorted(p.name for p in path.parent.iterdir()) == [LINEAGE_FILE]
    assert path.read_text().startswith('{\n  "format": "lifecycle.lineage"')
    assert read_record(path.parent) == record == read_record(path)
    assert update_record(path.parent, status="finished")["status"] == "finished"
    assert read_record(path) == {**record, "status": "finished"}
    assert sorted(p.name for p in path.parent.iterdir()) == [LINEAGE_FILE]


def test_a_failed_write_keeps_the_old_record_and_no_temporary_file(tmp_path):
    write_record(tmp_path, {"stage": "old"})

    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot print")

    with pytest.raises(RuntimeError, match="cannot print"):
        write_record(tmp_path, {"stage": Unprintable()})
    assert read_record(tmp_path) == {"stage": "old"}
    assert [p.name for p in tmp_path.iterdir()] == [LINEAGE_FILE]


def test_reading_a_folder_or_checkpoint_without_a_record_says_how_to_get_one(tmp_path):
    import torch

    with pytest.raises(MissingFileError, match=r"holds no lineage.json.*Fix:"):
        read_record(tmp_path)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "plain.ckpt")
    with pytest.raises(MissingFileError, match=r"not written by a lifecycle run.*lifecycle fit"):
        read_record(tmp_path / "plain.ckpt")
    (tmp_path / "other.json").write_text('{"format": "something.else"}')
    with pytest.raises(MissingFileError, match="is not a lineage record"):
        read_record(tmp_path / "other.json")


def test_headline_metrics_come_from_the_test_report_the_log_and_the_cleaning_report(tmp_path):
    assert headline_metrics(tmp_path) == {}
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss,val/acc\n0,9,1.5,,\n0,9,,0.9,0.5\n1,19,,0.7,0.6\n"
    )
    assert headline_metrics(tmp_path) == {"val/loss": 0.7, "val/acc": 0.6}
    report = {"metrics": {"acc": 0.81, "f1": None}, "checkpoint": "best.ckpt", "per_class": {}}
    (tmp_path / "metrics.json").write_text(json.dumps(report))
    assert headline_metrics(tmp_path) == {"val/loss": 0.7, "val/acc": 0.6, "test/acc": 0.81}
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "report.json").write_text(json.dumps({"records": 100, "kept": 93, "findings": {}}))
    assert headline_metrics(clean) == {"records": 100.0, "kept": 93.0, "removed": 7.0}
    assert lineage.headline({"test/acc": 0.81, "val/loss": 0.7}) == "test/acc=0.8100"
    assert lineage.headline({"kept": 93.0, "removed": 7.0}) == "kept=93, removed=7"


# ----------------------------------------------------------------------------- callback
def _fit(tmp_path, name="mystage", pre=None, config=None, then_test=False):
    """One short epoch of a BoringModel that logs val/loss, with a CSVLogger and checkpoints;
    ``pre`` is a record written into the run folder first (as the runner does)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.loggers import CSVLogger

    class Logged(BoringModel):
        def validation_step(self, batch, batch_idx):
            loss = self.step(batch)
            self.log("val/loss", loss)
            return {"x": loss}

        def test_step(self, batch, batch_idx):
            self.log("test/loss", self.step(batch))

    folder = tmp_path / name / "version_0"
    if pre is not None:
        write_record(folder, pre)
    if config is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(config)
    model = Logged()
    callback = LineageCallback()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
        logger=CSVLogger(tmp_path, name=name, version=0), enable_progress_bar=False,
        enable_model_summary=False, callbacks=[callback, ModelCheckpoint()], limit_test_batches=1,
    )  # fmt: skip
    trainer.fit(model)
    if then_test:  # as `lifecycle fit` does with test_after_fit
        trainer.test(model, verbose=False)
    ckpt = next((folder / "checkpoints").glob("*.ckpt"))
    return model, folder, ckpt


def test_a_run_made_by_hand_gets_a_standalone_record_in_its_folder_and_checkpoints(tmp_path):
    config = "seed_everything: 3\nmodel:\n  class_path: x.Boring\n  init_args: {lr: 0.1}\n"
    model, folder, ckpt = _fit(tmp_path, config=config, then_test=True)
    parameters = sum(p.numel() for p in model.parameters())
    embedded = read_record(ckpt)
    assert embedded["stage"] == "mystage" and embedded["command"] == "fit"
    assert embedded["folder"] == str(folder) and embedded["status"] == "running"
    assert embedded["model"] == {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "parameters": parameters, "trainable": parameters,
    }  # fmt: skip
    flat = {"seed_everything": 3, "model.class_path": "x.Boring", "model.init_args.lr": 0.1}
    assert embedded["config"] == flat and embedded["config_hash"] == config_hash(flat)
    assert embedded["code"] == code_version() and "fingerprint" not in embedded
    on_disk = read_record(folder)
    assert on_disk["status"] == "finished" and on_disk["seconds"] > 0
    # testing after fitting went on with the same record: still the `fit` run, now with tests
    assert on_disk["command"] == "fit" and "attempts" not in on_disk
    assert set(on_disk["metrics"]) == {"val/loss", "test/loss"}
    assert on_disk["ended"] >= on_disk["started"]
    closing = ("status", "ended", "seconds", "metrics")
    assert {k: v for k, v in on_disk.items() if k not in closing} == {
        k: v for k, v in embedded.items() if k != "status"
    }


def test_the_runner_record_is_the_one_embedded_and_its_status_is_left_to_the_runner(tmp_path):
    pre = {
        "format": "lifecycle.lineage", "version": 1, "stage": "finetune", "command": "fit",
        "status": "running", "folder": "runs/demo/finetune/version_0",
        "fingerprint": "sha256:" + "f" * 64, "config": {"a": 1}, "config_hash": "sha256:00",
    }  # fmt: skip
    model, folder, ckpt = _fit(tmp_path, name="finetune", pre=pre)
    embedded = read_record(ckpt)
    parameters = sum(p.numel() for p in model.parameters())
    assert {k: v for k, v in embedded.items() if k != "model"} == pre
    assert embedded["model"]["parameters"] == parameters
    assert read_record(folder) == embedded  # still "running": the runner closes it


def test_a_resumed_run_counts_its_attempts_and_a_failed_one_records_the_error(tmp_path):
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.loggers import CSVLogger

    _fit(tmp_path)
    _, folder, _ = _fit(tmp_path)  # the same run folder again, in a new Trainer
    record = read_record(folder)
    assert record["attempts"] == 2 and record["status"] == "finished"

    class Broken(BoringModel):
        def training_step(self, batch, batch_idx):
            raise ValueError("bad batch")

    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
        logger=CSVLogger(tmp_path, name="broken", version=0), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[LineageCallback()],
    )  # fmt: skip
    with pytest.raises(ValueError, match="bad batch"):
        trainer.fit(Broken())
    record = read_record(tmp_path / "broken" / "version_0")
    assert record["status"] == "failed" and record["stage"] == "broken"
    assert record["error"] == {"type": "ValueError", "message": "bad batch"}


def test_a_run_without_a_logger_writes_no_record(tmp_path):
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    callback = LineageCallback()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[callback], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(BoringModel())
    assert callback.record is None and not list(tmp_path.rglob(LINEAGE_FILE))


# ----------------------------------------------------------------------------- the DAG
def _record(stage, command, root="runs/demo", version=0, status="finished", inputs=(), **more):
    folder = f"{root}/{stage}/version_{version}"
    config = {"data.init_args.dataset": "fashion-mnist", "trainer.max_epochs": 2}
    record = {
        "format": "lifecycle.lineage", "version": 1,
        "pipeline": {"name": "demo", "root": root, "recipe": "recipes/demo/lifecycle.yaml"},
        "stage": stage, "command": command, "status": status, "folder": folder,
        "config": config, "config_hash": config_hash({**config, "stage": stage}),
        "fingerprint": "sha256:" + "0" * 64,
        "started": f"2026-12-02T17:0{len(inputs)}:00+00:00",
        "inputs": {
            field: {"from": f"{up}.{output}", "stage": up, "output": output,
                    "path": f"{root}/{up}/version_0/{output}", "hash": f"sha256:{digest * 64}",
                    "folder": f"{root}/{up}/version_0"}
            for field, up, output, digest in inputs
        },
        **more,
    }  # fmt: skip
    return record


@pytest.fixture
def pipeline(tmp_path):
    """A pipeline folder as `lifecycle run` leaves it: clean -> pretrain -> finetune (which
    reads clean's manifest too), its records naming folders relative to where it ran (not
    here); pretrain has a newer failed attempt, version_1, after the finished version_0."""
    root = tmp_path / "demo"
    clean = _record("clean", "clean", metrics={"records": 100.0, "kept": 93.0, "removed": 7.0})
    pretrain = _record(
        "pretrain", "fit", inputs=[("data.init_args.cleaned_manifest", "clean", "manifest", "a")],
        metrics={"val/loss": 0.52},
    )  # fmt: skip
    failed = {**pretrain, "status": "failed", "folder": "runs/demo/pretrain/version_1"}
    finetune = _record(
        "finetune", "fit",
        inputs=[("model.init_args.backbone", "pretrain", "backbone", "b"),
                ("data.init_args.cleaned_manifest", "clean", "manifest", "a")],
        metrics={"test/acc": 0.81, "val/loss": 0.4},
        model={"class": "lifecycle.stages.ClassificationModule", "parameters": 330000},
    )  # fmt: skip
    write_record(root / "clean" / "version_0", clean)
    write_record(root / "pretrain" / "version_0", pretrain)
    write_record(root / "pretrain" / "version_1", failed)
    write_record(root / "finetune" / "version_0", finetune)
    return root


def test_pipeline_records_take_the_newest_finished_version_of_each_stage(pipeline):
    records = pipeline_records(pipeline)
    assert sorted(records) == ["clean", "finetune", "pretrain"]
    assert records["pretrain"]["folder"] == "runs/demo/pretrain/version_0"
    assert records["pretrain"]["status"] == "finished"


def test_the_tree_of_a_pipeline_goes_from_the_raw_data_to_the_final_model(pipeline):
    text = lineage_tree(pipeline)
    h = lambda record: record["config_hash"][:19]  # noqa: E731 (sha256: and 12 hex)
    records = pipeline_records(pipeline)
    assert text == "\n".join([
        f"lineage of pipeline demo ({pipeline})",
        "raw data",
        "  fashion-mnist",
        "stages",
        "  ├─ clean [clean, finished] runs/demo/clean/version_0",
        f"  │    kept=93, removed=7 · config {h(records['clean'])}",
        "  │    <- data fashion-mnist",
        "  ├─ pretrain [fit, finished] runs/demo/pretrain/version_0",
        f"  │    val/loss=0.5200 · config {h(records['pretrain'])}",
        "  │    <- clean.manifest (sha256:aaaaaaaaaaaa) as data.init_args.cleaned_manifest",
        "  └─ finetune [fit, finished] runs/demo/finetune/version_0  <- final model",
        f"       test/acc=0.8100 · config {h(records['finetune'])} · "
        "ClassificationModule 330,000 parameters",
        "       <- clean.manifest (sha256:aaaaaaaaaaaa) as data.init_args.cleaned_manifest",
        "       <- pretrain.backbone (sha256:bbbbbbbbbbbb) as model.init_args.backbone",
    ]) + "\n"  # fmt: skip


def test_the_tree_of_one_stage_reads_its_upstream_records_and_says_which_are_missing(pipeline):
    text = lineage_tree(pipeline / "finetune" / "version_0")
    assert text.splitlines()[0] == f"lineage of {pipeline / 'finetune' / 'version_0'}"
    stages = [line.split()[1] for line in text.splitlines() if line.startswith(("  ├─", "  └─"))]
    assert stages == ["clean", "pretrain", "finetune"]
    assert "  fashion-mnist" in text.splitlines()
    (pipeline / "pretrain" / "version_0" / LINEAGE_FILE).unlink()
    text = lineage_tree(pipeline / "finetune" / "version_0")
    missing = pipeline / "pretrain" / "version_0" / LINEAGE_FILE
    assert f"pretrain: record missing (no record at {missing})" in text
    assert "<- pretrain.backbone (sha256:bbbbbbbbbbbb) [record missing]" in text


def test_the_tree_of_a_checkpoint_starts_from_its_embedded_record(pipeline):
    import torch

    record = read_record(pipeline / "finetune" / "version_0")
    ckpt = pipeline / "finetune" / "version_0" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(1)}, CHECKPOINT_KEY: record}, ckpt)
    text = lineage_tree(ckpt)
    assert text.startswith(f"lineage of {ckpt}\n")
    assert "<- pretrain.backbone (sha256:bbbbbbbbbbbb) as model.init_args.backbone" in text
    assert "├─ pretrain [fit, finished] runs/demo/pretrain/version_0" in text


def test_the_picture_of_a_pipeline_is_a_png(pipeline, tmp_path):
    out = draw_lineage(pipeline, tmp_path / "pictures" / "lineage.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    from PIL import Image

    with Image.open(out) as image:
        width, height = image.size
    assert width > height > 200  # left to right: data, clean, pretrain, finetune


def test_the_lineage_command_prints_the_tree_and_draws_the_picture(pipeline, capsys):
    assert lineage_command([str(pipeline)]) == 0
    printed = capsys.readouterr().out
    assert printed == lineage_tree(pipeline) + f"wrote {pipeline / 'lineage.png'}\n"
    assert (pipeline / "lineage.png").read_bytes()[:4] == b"\x89PNG"
    run = pipeline / "finetune" / "version_0"
    assert lineage_command([str(run), "--json", "--out", str(run / "x.png")]) == 0
    printed = capsys.readouterr().out
    shown, wrote = printed.rsplit("wrote ", 1)
    assert json.loads(shown) == read_record(run) and wrote == f"{run / 'x.png'}\n"


def test_the_lineage_command_on_a_missing_target_says_what_to_give(tmp_path):
    with pytest.raises(MissingFileError, match=r"nowhere does not exist\. Fix: give a pipeline"):
        lineage_command([str(tmp_path / "nowhere")])
    with pytest.raises(MissingFileError, match=r"holds no lineage records.*Fix:"):
        lineage_command([str(tmp_path)])
