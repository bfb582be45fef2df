"""``save_backbone`` decides a folder's kind from what it is told or what the backbone
declares (``input_kind``), never from what the DataModule happens to have."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lifecycle.artifacts import MANIFEST, backbone_kind, load_backbone, save_backbone
from lifecycle.errors import ConfigError
from lifecycle.models import MLP, SmallCNN, TextCNN


class UserTextBackbone(nn.Module):
    """A user's text backbone: not a lifecycle Backbone, says its inputs."""

    input_keys = ("input_ids", "attention_mask")

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.out_features = 4


class TokenizedOnly:
    """A DataModule with a tokenizer-like attribute but images: the old guess took it as text."""

    tokenizer = "not a tokenizer"
    hparams = {}

    def state_dict(self):
        return {"mean": [0.1], "std": [0.2]}


def test_the_kind_is_what_the_backbone_declares():
    assert backbone_kind(SmallCNN(channels=[4], hidden=8)) == "image"
    assert backbone_kind(TextCNN(vocab_size=20, embedding_dim=4, num_filters=2)) == "text"
    assert backbone_kind(UserTextBackbone()) == "text"
    assert backbone_kind(nn.Linear(3, 2)) == "image"


def test_an_image_backbone_saves_the_data_normalization_whatever_else_the_data_has(tmp_path):
    spec = {"class_path": "lifecycle.models.MLP", "init_args": {"in_features": 4, "hidden": [3]}}
    save_backbone(
        tmp_path / "b", MLP(4, hidden=(3,)), backbone_config=spec, datamodule=TokenizedOnly()
    )
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert manifest["kind"] == "image" and manifest["mean"] == [0.1]
    assert "tokenizer" not in manifest
    assert load_backbone(str(tmp_path / "b")).pretrained.mean == [0.1]


def test_an_explicit_kind_wins_and_an_unknown_one_is_refused(tmp_path):
    save_backbone(tmp_path / "f", MLP(4, hidden=(3,)), kind="features")
    assert json.loads((tmp_path / "f" / MANIFEST).read_text())["kind"] == "features"
    with pytest.raises(ConfigError, match="`kind` must be one of"):
        save_backbone(tmp_path / "x", MLP(4, hidden=(3,)), kind="audio")


def test_a_text_folder_needs_the_datamodule_tokenizer(tmp_path):
    class NoTokenizer:
        hparams = {}

    with pytest.raises(ConfigError, match="`tokenizer`"):
        save_backbone(tmp_path / "t", TextCNN(vocab_size=20, embedding_dim=4, num_filters=2),
                      datamodule=NoTokenizer())  # fmt: skip


def test_a_folder_written_before_kinds_were_explicit_still_loads(tmp_path):
    backbone = MLP(4, hidden=(3,))
    save_backbone(tmp_path / "old", backbone)
    path = tmp_path / "old" / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.pop("kind")  # what no reader needs: the manifest of version 1 as it was
    path.write_text(json.dumps(manifest))
    loaded = load_backbone(str(tmp_path / "old"))
    x = torch.randn(2, 4)
    assert torch.equal(loaded(x), backbone(x))
