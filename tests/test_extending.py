"""The README's "Extending" example: a user's own backbone and DataModule, in their own package
(``tests/user_project/my_project``), trained and tested by our stage through ``lifecycle fit``;
what a stage needs of them is named when it is missing; the README shows the files as they are."""

import json
import re
import sys

import lightning as L
import pytest

from lifecycle.errors import ConfigError
from tests.conftest import REPO, run_lifecycle

PROJECT = REPO / "tests" / "user_project"


def forget_my_project() -> None:
    """Drop any ``my_project`` imported earlier (tests/test_cli.py builds one of its own)."""
    for name in [m for m in sys.modules if m == "my_project" or m.startswith("my_project.")]:
        del sys.modules[name]


@pytest.fixture
def user_project(monkeypatch):
    forget_my_project()
    monkeypatch.syspath_prepend(str(PROJECT))  # what PYTHONPATH=tests/user_project does
    yield
    forget_my_project()


def test_a_users_backbone_and_datamodule_train_and_test_through_the_cli(user_project, tmp_path):
    run = run_lifecycle(
        ["fit", "--config", PROJECT / "classify.yaml", "--trainer.default_root_dir", tmp_path,
         "--trainer.enable_progress_bar", "false"]
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    folder = tmp_path / "user_project-classify" / "version_0"
    report = json.loads((folder / "metrics.json").read_text())
    assert report["metrics"]["accuracy"] >= 0.9  # 360 held-out digits
    assert report["class_names"] == [str(d) for d in range(10)]  # the DataModule's own names
    assert sum(map(sum, report["confusion_matrix"])) == 360
    assert (folder / "confusion_matrix.png").stat().st_size > 10_000


class NoClassCount(L.LightningDataModule):
    """A DataModule of the user's that forgot `num_classes`."""

    def train_dataloader(self):
        return []


def test_a_datamodule_without_what_the_stage_reads_is_named(user_project, tmp_path):
    run = run_lifecycle(
        ["fit", "--config", PROJECT / "classify.yaml", "--trainer.default_root_dir", tmp_path,
         "--data", "tests.test_extending.NoClassCount"]
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]
    assert "needs `num_classes` from NoClassCount" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_readme_shows_the_users_files_as_they_are():
    readme = (REPO / "README.md").read_text()
    for relative in ("my_project/nets.py", "my_project/data.py", "classify.yaml"):
        source = (PROJECT / relative).read_text().strip()
        blocks = re.findall(r"```(?:python|yaml)\n(.*?)```", readme, flags=re.S)
        assert any(block.strip() == source for block in blocks), f"README lacks {relative}"


def test_config_errors_name_the_protocol_member():
    from lifecycle.interfaces import ClassificationData, require_protocol

    with pytest.raises(ConfigError, match=r"`num_classes`.*ClassificationData"):
        require_protocol(NoClassCount(), ClassificationData, "ClassificationModule", "add it")
