"""End-to-end runs of the `lifecycle` command, asserting on the run folder it writes.

They run the command in this process (:func:`tests.conftest.run_lifecycle`), which saves a
Python start-up per command; tests/test_cli_commands.py runs each subcommand once as a real
process."""

import json
import logging
import textwrap

import pytest
import torch
from lightning.pytorch import LightningDataModule

from tests.conftest import REPO, Run, run_lifecycle


@pytest.fixture
def run_cli(caplog):
    """``run_cli(*args, cwd=REPO, check=True)``: ``lifecycle ARGS`` in this process from
    ``cwd``, as a :class:`~tests.conftest.Run` whose ``stderr`` also holds what was logged
    (Lightning's info lines included, as a real process prints them)."""
    caplog.set_level(logging.INFO, logger="lightning.pytorch")

    def run(*args, cwd=REPO, check=True) -> Run:
        caplog.clear()
        proc = run_lifecycle([str(a) for a in args], cwd=cwd)
        proc = Run(proc.returncode, proc.stdout, proc.stderr + caplog.text)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"lifecycle {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                f"{proc.stderr[-4000:]}"
            )
        return proc

    return run


QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.mark.slow
def test_fit_digits_recipe_end_to_end(tmp_path, run_cli):
    run_cli(
        "fit",
        "--config",
        REPO / "recipes/digits/classify.yaml",
        "--trainer.default_root_dir",
        tmp_path,
        *QUIET,
    )
    run = tmp_path / "digits-classify" / "version_0"
    report = json.loads((run / "metrics.json").read_text())
    assert report["metrics"]["accuracy"] >= 0.9
    assert "best-" in report["checkpoint"]
    for name in (
        "config.yaml",
        "metrics.csv",
        "confusion_matrix.png",
        "roc_curve.png",
        "checkpoints/last.ckpt",
    ):
        assert (run / name).is_file(), name
    assert (run / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert list(
        (run / "tensorboard").glob("events.out.tfevents.*")
    )  # tensorboard is in the dev extra
    assert "class_path: lifecycle.models.SmallCNN" in (run / "config.yaml").read_text()

    # test and predict from the checkpoint, in a new run folder, repeating nothing but the data config
    ckpt = run / "checkpoints" / "last.ckpt"
    run_cli(
        "test",
        "--config",
        REPO / "recipes/digits/classify.yaml",
        "--ckpt_path",
        ckpt,
        "--trainer.default_root_dir",
        tmp_path,
        *QUIET,
    )
    retest = json.loads((tmp_path / "digits-classify" / "version_1" / "metrics.json").read_text())
    assert retest["metrics"]["accuracy"] >= 0.9
    run_cli(
        "predict",
        "--config",
        REPO / "recipes/digits/classify.yaml",
        "--ckpt_path",
        ckpt,
        "--trainer.default_root_dir",
        tmp_path,
        *QUIET,
    )
    rows = (tmp_path / "digits-classify" / "version_2" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("index,source,prediction,label,prob_0")
    assert len(rows) == 1 + round(1797 * 0.2)
    correct = sum(r.split(",")[2] == r.split(",")[3] for r in rows[1:])
    assert correct / (len(rows) - 1) >= 0.9

    # new, unlabeled images of another size and mode: converted to the training images' 8x8 grey
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    new = tmp_path / "new_images"
    new.mkdir()
    for i in range(40):
        grey = (digits.images[-1 - i] * 255 / 16).astype("uint8")
        name = f"img{i:02d}_label{digits.target[-1 - i]}.png"
        Image.fromarray(grey).convert("RGB").resize((16, 16)).save(new / name)
    run_cli("predict", "--config", REPO / "recipes/digits/classify.yaml", "--ckpt_path", ckpt,
            "--data.init_args.predict_path", new, "--trainer.default_root_dir", tmp_path, *QUIET)  # fmt: skip
    rows = (tmp_path / "digits-classify" / "version_3" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("index,source,prediction,prob_0") and len(rows) == 41
    hits = [r.split(",")[1].endswith(f"_label{r.split(',')[2]}.png") for r in rows[1:]]
    assert sum(hits) >= 30  # upscaled then downscaled again: most are still recognized


@pytest.mark.slow
def test_resume_from_last_checkpoint_continues_training(tmp_path, run_cli):
    # no one-cycle schedule here: its length is fixed at the start, so a longer resumed run cannot use it
    args = [
        "--config",
        REPO / "recipes/digits/classify.yaml",
        "--model.init_args.scheduler",
        "null",
        "--trainer.default_root_dir",
        tmp_path,
        "--test_after_fit",
        "false",
        *QUIET,
    ]
    run_cli("fit", *args, "--trainer.max_epochs", "2")
    last = tmp_path / "digits-classify" / "version_0" / "checkpoints" / "last.ckpt"
    proc = run_cli("fit", *args, "--trainer.max_epochs", "3", "--ckpt_path", last)
    assert "Restoring states from the checkpoint" in proc.stderr + proc.stdout
    lines = (tmp_path / "digits-classify" / "version_1" / "metrics.csv").read_text().splitlines()
    epochs = {line.split(",")[0] for line in lines[1:]}
    assert epochs == {"2"}  # only the third epoch was trained


@pytest.mark.slow
def test_users_own_backbone_plugs_in_by_class_path(tmp_path, run_cli, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # as PYTHONPATH would
    (tmp_path / "my_project").mkdir()
    (tmp_path / "my_project" / "__init__.py").write_text("")
    (tmp_path / "my_project" / "nets.py").write_text(
        textwrap.dedent('''
        import torch
        from torch import nn

        class TinyNet(nn.Module):
            """A user's own backbone: anything with `out_features`."""

            def __init__(self, width: int = 32):
                super().__init__()
                self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Tanh())
                self.out_features = width

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net(x)
    ''')
    )
    proc = run_cli(
        "fit",
        "--config",
        REPO / "recipes/digits/classify.yaml",
        "--model.init_args.backbone",
        "my_project.nets.TinyNet",
        "--model.init_args.backbone.init_args.width",
        "48",
        "--trainer.max_epochs",
        "8",
        "--trainer.default_root_dir",
        tmp_path,
        "--run_name",
        "mine",
        *QUIET,
        cwd=tmp_path,
    )
    run = tmp_path / "mine" / "version_0"
    assert "my_project.nets.TinyNet" in (run / "config.yaml").read_text()
    assert json.loads((run / "metrics.json").read_text())["metrics"]["accuracy"] > 0.85, (
        proc.stderr[-2000:]
    )


def test_config_typo_gets_lightning_clis_own_message(tmp_path, run_cli):
    proc = run_cli(
        "fit",
        "--config",
        REPO / "recipes/digits/classify.yaml",
        "--model.init_args.num_clases",
        "3",
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "num_clases" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_class_path_is_reported(tmp_path, run_cli):
    proc = run_cli(
        "fit",
        "--config",
        REPO / "recipes/digits/classify.yaml",
        "--model.init_args.backbone",
        "lifecycle.models.NoSuchNet",
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "NoSuchNet" in proc.stderr


def test_missing_dataset_error_reaches_the_user(tmp_path, run_cli):
    proc = run_cli(
        "fit",
        "--config",
        REPO / "recipes/digits/classify.yaml",
        "--data.init_args.dataset",
        tmp_path / "missing_folder",
        "--trainer.default_root_dir",
        tmp_path,
        *QUIET,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "lifecycle fit: error: Dataset " in proc.stderr and "Traceback" not in proc.stderr
    assert "missing_folder" in proc.stderr and "Fix:" in proc.stderr
    (failed,) = tmp_path.glob("digits-classify/version_*/FAILED")
    assert failed.read_text().startswith("lifecycle.data.datasets.DatasetNotFoundError\nDataset ")


def test_albumentations_pipeline_from_config(tmp_path):
    import albumentations as A
    from lightning.pytorch import LightningDataModule, LightningModule

    from lifecycle.cli import LifecycleCLI

    pipeline = '{"class_path": "albumentations.Compose", "init_args": {"transforms": [{"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 1.0}}]}}'
    cli = LifecycleCLI(
        LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
        auto_configure_optimizers=False,
        args=["--config", str(REPO / "recipes/digits/classify.yaml"), "--data.init_args.train_transforms", pipeline,
              "--trainer.default_root_dir", str(tmp_path)],
    )  # fmt: skip
    transform = cli.datamodule.train_transforms
    assert isinstance(transform, A.Compose) and isinstance(
        transform.transforms[0], A.HorizontalFlip
    )
    cli.datamodule.setup("fit")
    image = cli.datamodule.splits["train"].x[0]
    flipped = cli.datamodule._datasets["train"][0]["image"]
    plain = cli.datamodule._datasets["val"]._normalize(image[None, :, ::-1])[0]
    assert torch.allclose(flipped, plain)


@pytest.mark.slow
def test_tweets_rnn_recipe_on_real_tweets_then_predict_from_the_checkpoint(tmp_path, run_cli):
    recipe = REPO / "recipes/tweets/classify_rnn.yaml"
    small = ["--data.init_args.train_subset", "4000", "--trainer.max_epochs", "2"]
    run_cli("fit", "--config", recipe, "--trainer.default_root_dir", tmp_path, *small, *QUIET)
    run = tmp_path / "tweets-classify_rnn" / "version_0"
    report = json.loads((run / "metrics.json").read_text())
    assert report["metrics"]["accuracy"] >= 0.55  # the majority class is 0.44 of the test split
    assert report["class_names"] == ["negative", "neutral", "positive"]
    import csv
    from collections import Counter

    with open(run / "data_issues.csv") as f:
        reasons = Counter(row["reason"] for row in csv.DictReader(f))
    assert reasons == {
        "bytes that are not valid UTF-8": 4934,
        "duplicate text": 797,
        "duplicate text, outvoted label": 123,
        "duplicate text, tied label": 35,  # one record of each tied group is kept
    }
    assert (run / "tokenizer" / "tokenizer.json").is_file()

    # predict from the checkpoint with a data config that would train another tokenizer: the
    # checkpoint's own tokenizer is restored, so the test split scores as it did after fit
    ckpt = next((run / "checkpoints").glob("best-*.ckpt"))
    common = ["--config", recipe, "--ckpt_path", ckpt, "--trainer.default_root_dir", tmp_path]
    run_cli("predict", *common, "--data.init_args.vocab_size", "300", *small, *QUIET)
    rows = (tmp_path / "tweets-classify_rnn" / "version_1" / "predictions.csv").read_text()
    rows = rows.splitlines()
    header = "index,source,prediction,label,prob_negative,prob_neutral,prob_positive"
    assert rows[0] == header and len(rows) == 1 + sum(map(sum, report["confusion_matrix"]))
    hits = sum(r.split(",")[2] == r.split(",")[3] for r in rows[1:])
    assert abs(hits / (len(rows) - 1) - report["metrics"]["accuracy"]) < 0.005

    def vocab(version):
        path = tmp_path / "tweets-classify_rnn" / version / "tokenizer" / "tokenizer.json"
        return json.loads(path.read_text())["model"]["vocab"]

    assert vocab("version_1") == vocab("version_0")  # the run folder holds the one used

    new = tmp_path / "new.txt"
    new.write_text("I love this, what a wonderful day!\nworst service ever, I hate it\n")
    run_cli("predict", *common, "--data.init_args.predict_path", new, *small, *QUIET)
    rows = (tmp_path / "tweets-classify_rnn" / "version_2" / "predictions.csv").read_text()
    rows = rows.splitlines()
    assert [r.split(",")[1] for r in rows[1:]] == ["new.txt:line 1", "new.txt:line 2"]
    probs = [sum(map(float, r.split(",")[3:])) for r in rows[1:]]
    assert all(abs(p - 1) < 1e-4 for p in probs)


def test_augment_preview_writes_a_grid_from_a_recipe(tmp_path, run_cli):
    out = tmp_path / "grid.png"
    proc = run_cli("augment", "preview", "--config", REPO / "recipes/digits/classify.yaml",
                   "--data.init_args.train_transforms", "heavy", "--samples", "3", "--views", "2",
                   "--out", out, "--trainer.default_root_dir", tmp_path)  # fmt: skip
    assert f"wrote {out}" in proc.stdout
    from PIL import Image

    with Image.open(out) as image:
        width, height = image.size
    assert out.read_bytes()[:4] == b"\x89PNG" and height > width  # 3 rows of 3 pictures + titles
    bad = run_cli("augment", "preview", "--config", REPO / "recipes/tweets/classify_cnn.yaml",
                  "--out", out, "--trainer.default_root_dir", tmp_path, check=False)  # fmt: skip
    assert bad.returncode == 2 and "TextClassificationDataModule" in bad.stderr
    bad = run_cli("augment", "preview", "--out", out, check=False)
    assert bad.returncode == 2 and "give the recipe: --config" in bad.stderr


@pytest.mark.slow
def test_clean_recipe_writes_manifest_and_report_that_fit_consumes(tmp_path, run_cli):
    proc = run_cli("clean", "--config", REPO / "recipes/fashion_mnist/clean.yaml",
                   "--cleaning.subset", "600", "--cleaning.folds", "2", "--trainer.max_epochs", "1",
                   "--trainer.precision", "32-true", "--trainer.default_root_dir", tmp_path, *QUIET)  # fmt: skip
    out = tmp_path / "fashion_mnist-clean" / "version_0"
    assert f"wrote {out}" in proc.stdout
    for name in ("manifest.csv", "removed.csv", "findings.csv", "report.md", "report.json",
                 "class_balance.png", "config.yaml", "out_of_fold_probabilities.npy"):  # fmt: skip
        assert (out / name).is_file(), name
    summary = json.loads((out / "report.json").read_text())
    manifest = (out / "manifest.csv").read_text().splitlines()
    removed = (out / "removed.csv").read_text().splitlines()
    assert summary["records"] == 600 and summary["kept"] == len(manifest) - 1
    # every record is either kept or listed as removed, with its reason
    dropped = [r for r in removed[1:] if ",dropped," in r]
    assert summary["kept"] + len(dropped) == 600
    assert manifest[0] == "source,label,weight,original_label"
    assert manifest[1].startswith("fashion-mnist:train[")
    # training reads the manifest: only its records, split into train and val
    fit = run_cli("fit", "--config", REPO / "recipes/fashion_mnist/classify.yaml",
                  "--data.init_args.cleaned_manifest", out / "manifest.csv",
                  "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                  "--trainer.limit_val_batches", "1", "--test_after_fit", "false",
                  "--trainer.default_root_dir", tmp_path, *QUIET)  # fmt: skip
    assert f"keeps {summary['kept']} of 60000 training images" in fit.stderr
    bad = run_cli("clean", check=False)
    assert bad.returncode != 0 and "give the recipe" in bad.stderr


def test_a_preset_added_as_second_config_keeps_the_recipes_run_name():
    from lifecycle.cli import default_run_name

    assert default_run_name(["recipes/fashion_mnist/classify.yaml", "recipes/strategies/ddp.yaml",
                             "recipes/precision/bf16-mixed.yaml"]) == "fashion_mnist-classify"  # fmt: skip
    assert default_run_name(["recipes/strategies/ddp.yaml"]) == "strategies-ddp"
    assert default_run_name([]) == "lifecycle"


# ----------------------------------------------------------------------------- errors a person reads
def _digits_args(tmp_path, *extra):
    return ["fit", "--config", str(REPO / "recipes/digits/classify.yaml"),
            "--trainer.default_root_dir", str(tmp_path), *QUIET, *map(str, extra)]  # fmt: skip


def test_debug_flag_and_env_show_a_user_errors_traceback(tmp_path, monkeypatch, capsys):
    from lifecycle.cli import main
    from lifecycle.errors import MissingFileError

    with pytest.raises(SystemExit) as exit_:
        main(_digits_args(tmp_path, "--ckpt_path", "last"))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().startswith("lifecycle fit: error: --ckpt_path last:")
    with pytest.raises(MissingFileError, match="no earlier run to resume"):
        main(_digits_args(tmp_path, "--ckpt_path", "last", "--debug"))  # not passed on
    monkeypatch.setenv("LIFECYCLE_DEBUG", "1")
    with pytest.raises(MissingFileError, match="no earlier run to resume"):
        main(_digits_args(tmp_path, "--ckpt_path", "last"))


class BuggyData(LightningDataModule):
    """A DataModule whose setup has a bug (an internal error, not the user's)."""

    def setup(self, stage):
        raise RuntimeError("bug in setup")


def test_an_internal_error_keeps_its_traceback_and_marks_the_run_failed(tmp_path, capsys):
    from lifecycle.cli import main

    with pytest.raises(RuntimeError, match="bug in setup"):
        main(_digits_args(tmp_path, "--data", "tests.test_cli.BuggyData"))
    assert ": error:" not in capsys.readouterr().err
    (failed,) = tmp_path.glob("digits-classify/version_*/FAILED")
    assert failed.read_text() == "builtins.RuntimeError\nbug in setup\n"


def test_user_errors_are_found_behind_wrappers_and_worker_tracebacks():
    from lifecycle.cli import describe_error, user_error_message
    from lifecycle.errors import ConfigError, DataError

    try:  # jsonargparse raises its own error from the one __init__ raised
        try:
            raise ConfigError("`num_classes` must be >= 2. Fix: set it to 10.")
        except ConfigError as inner:
            raise ValueError("Does not validate against any of the Union subtypes") from inner
    except ValueError as outer:
        assert user_error_message(outer) == "`num_classes` must be >= 2. Fix: set it to 10."
    try:  # an error during Lightning's teardown, while the user's error was handled
        try:
            raise DataError("row 3 is NaN. Fix: drop it.")
        except DataError:
            raise RuntimeError("teardown failed")  # noqa: B904
    except RuntimeError as outer:
        assert user_error_message(outer) == "row 3 is NaN. Fix: drop it."
    # a spawned DDP rank sends its error back as traceback text
    sent = RuntimeError(
        "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call "
        'last):\n  File "x.py", line 3, in setup\nlifecycle.errors.DataError: row 3 is NaN.\n'
        "Fix: drop it.\n"
    )
    assert user_error_message(sent) == "row 3 is NaN.\nFix: drop it."
    assert describe_error(sent)[0] == "lifecycle.errors.DataError"  # what FAILED records
    assert user_error_message(RuntimeError("bug")) is None
    assert user_error_message(KeyError("lifecycle.errors.DataError: not a traceback")) is None


class _BadRows(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        from lifecycle.errors import DataError

        raise DataError(f"row {i} of rows.csv is empty. Fix: fill it in.")


def test_a_user_error_raised_in_a_dataloader_worker_keeps_its_short_message():
    from lifecycle.cli import user_error_message
    from lifecycle.errors import DataError

    loader = torch.utils.data.DataLoader(_BadRows(), num_workers=1, multiprocessing_context="fork")
    with pytest.raises(DataError) as caught:
        next(iter(loader))
    assert "DataLoader worker" in str(caught.value)  # torch re-raises it with the traceback
    assert user_error_message(caught.value) == "row 0 of rows.csv is empty. Fix: fill it in."


def test_ckpt_path_checks_name_the_file(tmp_path):
    from lifecycle.cli import check_checkpoint_file
    from lifecycle.errors import MissingFileError

    with pytest.raises(MissingFileError, match="no such file"):
        check_checkpoint_file(str(tmp_path / "gone.ckpt"))
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64, 64)}}, good)
    check_checkpoint_file(str(good))
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:3000])
    with pytest.raises(MissingFileError, match="cut.ckpt is not a readable checkpoint"):
        check_checkpoint_file(str(tmp_path / "cut.ckpt"))
    with pytest.raises(MissingFileError, match="holds: cut.ckpt, good.ckpt"):
        check_checkpoint_file(str(tmp_path / "best.ckpt"))
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    check_checkpoint_file(str(legacy))


@pytest.mark.slow
def test_ckpt_path_last_skips_a_failed_run_without_checkpoint_and_clears_a_resumed_mark(
    tmp_path, capsys
):
    from lifecycle.cli import main

    small = ["--model.init_args.scheduler", "null", "--test_after_fit", "false",
             "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]  # fmt: skip
    main(_digits_args(tmp_path, *small, "--trainer.max_epochs", "1"))
    run = tmp_path / "digits-classify"
    assert (run / "version_0/checkpoints/last.ckpt").is_file()
    # a later run failed before its first checkpoint, and the first one was marked failed
    # (e.g. killed while testing): `last` resumes the first, and its success clears the mark
    (run / "version_1").mkdir()
    (run / "version_1/FAILED").write_text("lifecycle.errors.DataError\nbad rows\n")
    (run / "version_0/FAILED").write_text("builtins.KeyboardInterrupt\n\n")
    main(_digits_args(tmp_path, *small, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    assert not (run / "version_0/FAILED").exists()
    assert (run / "version_1/FAILED").is_file() and not (run / "version_2").exists()
    epochs = {r.split(",")[0] for r in (run / "version_0/metrics.csv").read_text().splitlines()[1:]}
    assert epochs == {"0", "1"}


def test_a_failed_clean_marks_its_folder_and_prints_the_short_message(tmp_path, capsys):
    from lifecycle.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["clean", "--config", str(REPO / "recipes/fashion_mnist/clean.yaml"),
              "--data.init_args.dataset", str(tmp_path / "no_images"),
              "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lifecycle clean: error: Dataset ") and "no_images" in err
    (failed,) = tmp_path.glob("fashion_mnist-clean/version_0/FAILED")
    assert failed.read_text().startswith("lifecycle.data.datasets.DatasetNotFoundError\n")
