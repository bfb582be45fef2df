"""The pretrained-backbone format: backbones record how to rebuild them, and reading a folder
that is missing, foreign or mis-shaped fails with an error naming what is wrong."""

import json

import pytest
import torch

from lifecycle.artifacts import MANIFEST, load_backbone, load_weights, save_backbone
from lifecycle.models import MLP, SmallCNN, SmallResNet


def test_backbones_record_the_arguments_they_were_built_with():
    assert SmallCNN(channels=(8, 16), hidden=32).init_args == {
        "in_channels": 1, "channels": (8, 16), "convs_per_block": 2, "pool_size": 4,
        "hidden": 32, "dropout": 0.25,
    }  # fmt: skip
    assert SmallResNet(3, widths=(8,)).init_args["in_channels"] == 3


def test_a_saved_backbone_loads_back_as_the_same_class_with_the_same_outputs(tmp_path):
    backbone = SmallResNet(widths=(8, 16), blocks_per_stage=1)
    path = save_backbone(tmp_path / "b", backbone, produced_by={"objective": "test"})
    manifest = json.loads(path.read_text())
    assert manifest["format"] == "lifecycle.pretrained" and manifest["version"] == 1
    assert manifest["backbone"]["init_args"]["widths"] == [8, 16]
    assert manifest["out_features"] == 16 and manifest["produced_by"] == {"objective": "test"}
    loaded = load_backbone(str(tmp_path / "b"), freeze=True)
    assert type(loaded) is SmallResNet
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(2, 1, 12, 12)
    backbone.eval(), loaded.eval()
    assert torch.equal(backbone(x), loaded(x))


def test_a_missing_folder_or_one_without_a_manifest_says_what_to_point_at(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*version_N/pretrained"):
        load_backbone(str(tmp_path / "nowhere"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.bin").write_text("x")
    with pytest.raises(
        FileNotFoundError,
        match=rf"no {MANIFEST} .* and no config.json .*\(it holds \['model.bin'\]\)",
    ):
        load_backbone(str(tmp_path / "other"))


def test_weights_that_do_not_fit_list_the_mismatched_keys_and_shapes(tmp_path):
    save_backbone(tmp_path / "b", MLP(4, hidden=(8, 3)))
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    manifest["backbone"]["init_args"]["hidden"] = [8, 5]  # a manifest edited by hand
    (tmp_path / "b" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError, match=r"2 mis-shaped: \['layers.4.bias: saved \(3,\), model \(5,\)'"
    ):
        load_backbone(str(tmp_path / "b"))


def test_a_newer_format_is_refused(tmp_path):
    save_backbone(tmp_path / "b", MLP(4, hidden=(3,)))
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    (tmp_path / "b" / MANIFEST).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match=r"version 99; this lifecycle reads .* up to version 1"):
        load_backbone(str(tmp_path / "b"))


def test_a_backbone_built_in_python_without_recorded_arguments_needs_a_config(tmp_path):
    with pytest.raises(ValueError, match=r"does not record its arguments.*backbone_config"):
        save_backbone(tmp_path / "b", torch.nn.Linear(3, 2))
    save_backbone(tmp_path / "c", torch.nn.Linear(3, 2),
                  backbone_config={"class_path": "torch.nn.Linear", "init_args": {"in_features": 3, "out_features": 2}})  # fmt: skip
    assert isinstance(load_backbone(str(tmp_path / "c")), torch.nn.Linear)


def test_load_weights_maps_a_checkpoints_keys_and_lists_what_does_not_fit(tmp_path):
    source = MLP(4, hidden=(8, 3))
    # a whole model's checkpoint, as Lightning writes it: the backbone's keys under "backbone."
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["head.weight"] = torch.zeros(2, 3)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "model.ckpt")
    loaded = load_weights(MLP(4, hidden=(8, 3)), str(tmp_path / "model.ckpt"), {"backbone.": ""})
    x = torch.randn(5, 4)
    assert torch.equal(loaded(x), source(x))
    assert loaded.load_report == {"missing": [], "unexpected": []}
    # without the map every key is unexpected (and every model key missing): listed
    with pytest.raises(ValueError, match=r"4 missing: \['layers.1.bias'.*5 unexpected"):
        load_weights(MLP(4, hidden=(8, 3)), str(tmp_path / "model.ckpt"))
    # not strict: the matching keys load, the rest is reported
    torch.save({"layers.1.weight": source.layers[1].weight, "extra.w": torch.ones(1)},
               tmp_path / "part.pt")  # fmt: skip
    part = load_weights(MLP(4, hidden=(8, 3)), str(tmp_path / "part.pt"), strict=False)
    assert torch.equal(part.layers[1].weight, source.layers[1].weight)
    assert part.load_report["unexpected"] == ["extra.w"]
    assert "layers.4.weight" in part.load_report["missing"]
    # mis-shaped weights are an error even when not strict, with both shapes
    with pytest.raises(ValueError, match=r"layers.1.weight: saved \(8, 4\), model \(6, 4\)"):
        load_weights(MLP(4, hidden=(6, 3)), str(tmp_path / "part.pt"), strict=False)
    with pytest.raises(ValueError, match=r"No key of .* starts with a key_map prefix"):
        load_weights(MLP(4, hidden=(8, 3)), str(tmp_path / "part.pt"), {"model.": ""})


def test_load_weights_never_unpickles_code(tmp_path):
    import collections

    torch.save(collections.OrderedDict(w=torch.ones(1), f=print), tmp_path / "code.pt")
    with pytest.raises(ValueError, match=r"not a weights file torch can read safely"):
        load_weights(MLP(4, hidden=(3,)), str(tmp_path / "code.pt"))


def test_a_loaders_entry_is_replaced_by_the_backbones_own_spec_frozen_when_loaded_frozen(tmp_path):
    import shutil

    from lifecycle.artifacts import standalone_hparams
    from lifecycle.stages import ClassificationModule

    save_backbone(tmp_path / "pre", MLP(4, hidden=(3,)))
    loader = {"class_path": "lifecycle.artifacts.load_backbone", "init_args": {"freeze": True}}
    loader["init_args"]["path"] = str(tmp_path / "pre")
    hparams = {"backbone": loader, "num_classes": 2}
    backbone = load_backbone(str(tmp_path / "pre"), freeze=True)
    standalone_hparams(hparams, "backbone", backbone)
    assert hparams["backbone"]["class_path"] == "lifecycle.artifacts.frozen"
    own = hparams["backbone"]["init_args"]["backbone"]
    assert own["class_path"] == "lifecycle.models.vision.MLP"
    assert own["init_args"]["in_features"] == 4 and own["init_args"]["hidden"] == [3]

    shutil.rmtree(tmp_path / "pre")
    model = ClassificationModule(backbone, num_classes=2)
    hparams |= {"_class_path": "lifecycle.stages.ClassificationModule",
                "_instantiator": "lightning.pytorch.cli.instantiate_module"}  # fmt: skip
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": hparams,
                  "pytorch-lightning_version": "2.6.0"}  # fmt: skip
    torch.save(checkpoint, tmp_path / "probe.ckpt")
    reloaded = ClassificationModule.load_from_checkpoint(tmp_path / "probe.ckpt")
    assert type(reloaded.backbone) is MLP
    assert not any(p.requires_grad for p in reloaded.backbone.parameters())
    x = torch.randn(3, 4)
    assert torch.equal(reloaded.eval()(x), model.eval()(x))
