"""Loading a folder or checkpoint from elsewhere runs no code: a manifest or a checkpoint's
hyperparameters naming anything but networks (and, in a checkpoint, optimizers and schedulers)
is refused with an UnsafeLoadError naming the file and the class, before anything is called."""

import json

import pytest
import torch

from lifecycle.artifacts import MANIFEST, load_backbone, save_backbone
from lifecycle.errors import UnsafeLoadError
from lifecycle.models import MLP


def hostile_folder(tmp_path, backbone_spec):
    folder = tmp_path / "pretrained"
    save_backbone(folder, MLP(4, hidden=(3,)))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["backbone"] = backbone_spec
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_a_manifest_naming_os_system_is_refused_before_it_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pwned = tmp_path / "PWNED"
    folder = hostile_folder(
        tmp_path, {"class_path": "os.system", "init_args": {"command": f"touch {pwned}"}}
    )
    with pytest.raises(UnsafeLoadError, match=r"lifecycle_pretrained.json.*'os\.system'") as err:
        load_backbone(str(folder))
    assert str(folder) in str(err.value) and "torch.nn.modules.module.Module" in str(err.value)
    assert not pwned.exists()


def test_a_class_nested_in_init_args_is_checked_too(tmp_path):
    pwned = tmp_path / "PWNED"
    spec = {
        "class_path": "lifecycle.models.MLP",
        "init_args": {
            "in_features": 4,
            "hidden": [
                {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(pwned)]}}
            ],
        },
    }
    with pytest.raises(
        UnsafeLoadError,
        match=r"backbone\.init_args\.hidden\[0\]\.class_path is 'subprocess\.Popen'",
    ):
        load_backbone(str(hostile_folder(tmp_path, spec)))
    assert not pwned.exists()


def hostile_checkpoint(tmp_path, **hparams):
    path = tmp_path / "hostile.ckpt"
    hyper_parameters = {
        "_class_path": "lifecycle.stages.ClassificationModule",
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "num_classes": 3,
        "backbone": {"class_path": "lifecycle.models.MLP", "init_args": {"in_features": 4}},
        **hparams,
    }
    torch.save(
        {
            "state_dict": {},
            "hyper_parameters": hyper_parameters,
            "pytorch-lightning_version": "2.6.0",
        },
        path,
    )
    return path


@pytest.mark.parametrize(
    "loader",
    ["load_from_checkpoint", "load_teacher"],
)
def test_a_checkpoint_naming_a_class_that_is_no_network_is_refused(tmp_path, loader):
    from lifecycle.stages import ClassificationModule
    from lifecycle.stages.distillation import load_teacher

    pwned = tmp_path / "PWNED"
    popen = {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(pwned)]}}
    path = hostile_checkpoint(tmp_path, backbone=popen)
    load = (
        ClassificationModule.load_from_checkpoint
        if loader == "load_from_checkpoint"
        else load_teacher
    )
    with pytest.raises(
        UnsafeLoadError,
        match=r"hostile\.ckpt: hyper_parameters\.backbone\.class_path is 'subprocess\.Popen'",
    ):
        load(str(path))
    assert not pwned.exists()


def test_a_checkpoint_naming_a_function_as_its_module_is_refused(tmp_path):
    from lifecycle.stages.distillation import load_teacher

    path = hostile_checkpoint(tmp_path, _class_path="os.system")
    with pytest.raises(UnsafeLoadError, match=r"_class_path is 'os\.system'.*LightningModule"):
        load_teacher(str(path))


def test_a_checkpoint_whose_loader_names_a_hostile_folder_is_refused(tmp_path):
    from lifecycle.stages import ClassificationModule

    pwned = tmp_path / "PWNED"
    folder = hostile_folder(
        tmp_path, {"class_path": "os.system", "init_args": {"command": f"touch {pwned}"}}
    )
    loader = {"class_path": "lifecycle.artifacts.load_backbone", "init_args": {"path": str(folder)}}
    with pytest.raises(UnsafeLoadError, match="'os.system'"):
        ClassificationModule.load_from_checkpoint(
            str(hostile_checkpoint(tmp_path, backbone=loader))
        )
    assert not pwned.exists()


def test_a_checkpoint_pickling_other_objects_is_refused_before_unpickling(tmp_path):
    from datetime import date

    from lifecycle.stages.distillation import load_teacher

    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": date(2026, 1, 1)}}, path)
    with pytest.raises(UnsafeLoadError, match=r"pickled\.ckpt pickles \['datetime\.date'\]"):
        load_teacher(str(path))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UnsafeLoadError, match=r"cannot be read with weights_only=True"):
        load_teacher(str(path))


def test_a_checkpoint_pickling_a_function_is_refused_and_one_pickling_classes_loads(tmp_path):
    from functools import partial

    from lifecycle.stages import ClassificationModule

    model = ClassificationModule(MLP(4, hidden=(3,)), num_classes=3)  # optimizer: the class
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": "2.6.0",
    }
    torch.save(checkpoint, tmp_path / "classes.ckpt")
    loaded = ClassificationModule.load_from_checkpoint(
        tmp_path / "classes.ckpt", backbone=MLP(4, hidden=(3,))
    )
    assert loaded.hparams["optimizer"] is torch.optim.AdamW

    checkpoint["hyper_parameters"]["optimizer"] = partial(print, "pwned")
    torch.save(checkpoint, tmp_path / "function.ckpt")
    with pytest.raises(
        UnsafeLoadError, match=r"function\.ckpt pickles \['builtins\.print', 'functools\.partial'\]"
    ):
        ClassificationModule.load_from_checkpoint(
            tmp_path / "function.ckpt", backbone=MLP(4, hidden=(3,))
        )


class _RunsCode:
    """Unpickling this object calls ``os.system``: what a hostile checkpoint would hold."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def test_a_ckpt_path_that_would_run_code_when_unpickled_is_refused_by_the_cli(
    tmp_path, monkeypatch, capsys
):
    from lifecycle.cli import main
    from tests.conftest import REPO

    monkeypatch.chdir(tmp_path)
    pwned = tmp_path / "PWNED"
    torch.save({"state_dict": {}, "payload": _RunsCode(f"touch {pwned}")}, tmp_path / "evil.ckpt")
    with pytest.raises(SystemExit) as exit_:
        main(["test", "--config", str(REPO / "recipes/digits/classify.yaml"),
              "--ckpt_path", str(tmp_path / "evil.ckpt"),
              "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "evil.ckpt" in err and "posix.system" in err and "Traceback" not in err, err
    assert not pwned.exists()
