"""The distillation stage's seams (issue 19): what it needs of the data, declared before the
DataModule's setup; what it reads of a DataModule, checked by name; its errors as ConfigError;
its declared outputs; and its package, split by concern. Tiny modules, no training."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lifecycle.errors import ConfigError, MissingFileError
from lifecycle.interfaces import DataNeeds, output_paths
from lifecycle.models import MLP
from lifecycle.stages import DistillationModule
from lifecycle.stages.distillation import FeatureCapture, load_teacher, teacher_tokenizer

PACKAGE = Path(__file__).resolve().parents[2] / "lifecycle" / "stages" / "distillation"


class Teacher(nn.Module):
    """A 3-class teacher of 4 features, with what load_teacher may attach."""

    num_classes = 3

    def __init__(self, tokenizer=None):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        if tokenizer is not None:
            self.tokenizer = tokenizer

    def forward(self, x):
        return self.linear(x)


def tokenizer(words: list[str]):
    from lifecycle.data.tokenization import train_tokenizer

    return train_tokenizer([" ".join(words)] * 4, "wordpiece", vocab_size=60, min_frequency=1)


def attach(model, datamodule):
    """``model`` as a Trainer holding ``datamodule`` runs it (``None``: plain DataLoaders)."""
    model.trainer = SimpleNamespace(datamodule=datamodule)
    return model


def test_data_needs_add_the_teachers_tokenizer_to_the_students_needs():
    student = MLP(4, [8])
    student.pretrained = SimpleNamespace(mean=[0.5], std=[0.25], folder="pre", tokenizer=None)
    plain = DistillationModule(Teacher(), student, 3)
    assert plain.data_needs() == DataNeeds(mean=[0.5], std=[0.25], normalization_source="pre")
    tok = tokenizer(["good", "bad"])
    needs = DistillationModule(Teacher(tok), MLP(4, [8]), 3).data_needs()
    assert needs.teacher_tokenizer is tok and needs.mean is None
    # a teacher whose backbone was pretrained with a tokenizer folder names that folder
    deep = Teacher()
    deep.backbone = SimpleNamespace(pretrained=SimpleNamespace(tokenizer="runs/x/pretrained"))
    assert teacher_tokenizer(deep) == "runs/x/pretrained"
    assert DistillationModule(deep, MLP(4, [8]), 3).data_needs().teacher_tokenizer == (
        "runs/x/pretrained"
    )


def test_a_datamodule_that_cannot_take_the_teachers_tokenizer_is_refused_in_setup():
    teacher_tok, data_tok = tokenizer(["good", "bad"]), tokenizer(["red", "blue", "green"])
    assert teacher_tok.get_vocab() != data_tok.get_vocab()
    datamodule = SimpleNamespace(tokenizer=data_tok, num_classes=3)  # no apply_data_needs
    model = attach(DistillationModule(Teacher(teacher_tok), MLP(4, [8]), 3), datamodule)
    with pytest.raises(
        ConfigError,
        match=r"own vocabulary \(\d+ tokens\) but SimpleNamespace cannot add the teacher's "
        r"tokenization.*apply_data_needs",
    ):
        model.setup("fit")


def test_a_datamodule_that_tokenizes_as_the_teacher_needs_no_apply_data_needs():
    # the teacher's tokenizer is a need only where it differs from the data's: a user's
    # DataModule tokenizing as the teacher does is not refused for lacking apply_data_needs
    same = tokenizer(["good", "bad"])
    batch = {"image": torch.randn(2, 4), "label": torch.tensor([0, 1])}
    datamodule = SimpleNamespace(tokenizer=same, num_classes=3, example_batch=lambda split: batch)
    model = attach(DistillationModule(Teacher(same), MLP(4, [8]), 3), datamodule)
    assert model.data_needs().teacher_tokenizer is same
    model.setup("fit")
    assert model.teacher_calls == 2  # setup went on to probe the teacher on one batch


def test_what_setup_reads_of_a_datamodule_is_named_when_missing():
    model = attach(DistillationModule(Teacher(), MLP(4, [8]), 3), SimpleNamespace(num_classes=3))
    with pytest.raises(ConfigError, match=r"needs `example_batch` from SimpleNamespace"):
        model.setup("fit")
    batch = {"image": torch.randn(2, 4), "label": torch.tensor([0, 1])}
    cached = DistillationModule(Teacher(), MLP(4, [8]), 3, cache_teacher=True)
    attach(cached, SimpleNamespace(num_classes=3, example_batch=lambda split: batch))
    with pytest.raises(ConfigError, match=r"needs `split_dataset` from SimpleNamespace"):
        cached.setup("fit")
    with pytest.raises(ConfigError, match="plain DataLoaders.*cache_teacher: false"):
        attach(cached, None).setup("fit")
    # with both, setup probes the teacher and sizes the cache on the training split
    data = SimpleNamespace(
        num_classes=3, example_batch=lambda split: batch, split_dataset=lambda split: range(5)
    )
    attach(cached, data).setup("fit")
    assert cached.cached.shape == (5,) and cached.teacher_calls == 2


def test_config_mistakes_are_config_errors_and_a_missing_teacher_a_missing_file():
    for kwargs, message in [
        ({"alpha": 1.5}, "`alpha` must be in"),
        ({"temperature": 0}, "`temperature` must be > 0"),
        ({"feature_weight": -1}, "`feature_weight` must be >= 0"),
        ({"feature_layers": {"layers.9": ""}}, "no layer named 'layers.9'"),
        ({"feature_layers": {"": "conv"}}, "teacher has no layer named 'conv'"),
        ({"feature_layers": {"": "linear"}, "cache_teacher": True}, "live activations"),
        ({"cache_teacher": True, "mix": "mixup"}, "mix: mixup"),
    ]:
        with pytest.raises(ConfigError, match=message):
            DistillationModule(Teacher(), MLP(4, [8]), 3, **kwargs)
    with pytest.raises(ConfigError, match="teacher outputs 3 classes"):
        DistillationModule(Teacher(), MLP(4, [8]), 5)
    with pytest.raises(ConfigError, match="`teacher` must be a module"):
        DistillationModule("teacher.ckpt", MLP(4, [8]), 3)
    # a teacher that takes other inputs than the mixed ones is refused when built, not mid-fit
    other = Teacher()
    other.input_keys = ["input_ids", "attention_mask"]
    with pytest.raises(ConfigError, match=r"could not see the same mixed input.*mix: null"):
        DistillationModule(other, MLP(4, [8]), 3, mix="mixup")
    with pytest.raises(MissingFileError, match="does not exist"):
        load_teacher("runs/none/checkpoints/last.ckpt")


def test_the_stage_declares_its_outputs_and_its_checkpoints_hold_the_student(tmp_path):
    outputs = DistillationModule.outputs
    assert {"checkpoint", "best_checkpoint", "metrics", "predictions"} <= set(outputs)
    assert "the student alone" in outputs["checkpoint"].description
    assert output_paths(DistillationModule, tmp_path)["checkpoint"] == (
        tmp_path / "checkpoints" / "last.ckpt"
    )


def test_the_teacher_moves_with_the_module_but_stays_out_of_its_state():
    teacher = Teacher()
    model = DistillationModule(teacher, MLP(4, [8]), 3).to(torch.float64)
    assert teacher.linear.weight.dtype == torch.float64
    assert not any(k.startswith("teacher") for k in model.state_dict())
    model.train()
    assert not teacher.training


def test_feature_capture_records_only_while_recording():
    layer = nn.Linear(2, 2)
    capture = FeatureCapture()
    capture.watch(layer, "student", "lin")
    layer(torch.ones(1, 2))
    assert capture.take() == {"student": {}, "teacher": {}}
    with capture.recording():
        out = layer(torch.ones(1, 2))
    assert not capture.active
    assert torch.equal(capture.take()["student"]["lin"], out)
    assert capture.features == {"student": {}, "teacher": {}}


def test_the_package_submodules_import_each_other_directly():
    for path in PACKAGE.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "lifecycle.stages.distillation", path.name
                assert node.module != "lifecycle.stages", path.name
