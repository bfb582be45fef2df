import pytest
import torch

from lifecycle.models import MLP, LinearHead, SmallCNN, SmallResNet, feature_size


@pytest.mark.parametrize(
    "backbone, shape",
    [
        (MLP(in_features=64, hidden=[32, 16]), (4, 1, 8, 8)),
        (SmallCNN(in_channels=1, channels=[8, 16], hidden=24), (4, 1, 28, 28)),
        (SmallCNN(in_channels=3, channels=[8], pool_size=2, hidden=12), (4, 3, 9, 13)),
        (SmallResNet(in_channels=3, widths=[8, 16, 32], blocks_per_stage=1), (4, 3, 32, 32)),
    ],
)
def test_backbones_map_images_to_out_features(backbone, shape):
    out = backbone(torch.randn(shape))
    assert out.shape == (shape[0], backbone.out_features) == (shape[0], feature_size(backbone))
    out.sum().backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_dropout_knob_is_active_in_train_mode_only():
    mlp = MLP(in_features=10, hidden=[64], dropout=0.5)
    x = torch.randn(8, 10)
    mlp.train()
    assert not torch.equal(mlp(x), mlp(x))
    mlp.eval()
    assert torch.equal(mlp(x), mlp(x))


def test_resnet_downsamples_and_has_residual_blocks():
    net = SmallResNet(in_channels=1, widths=[8, 16], blocks_per_stage=2)
    assert net.out_features == 16
    assert sum(type(m).__name__ == "BasicBlock" for m in net.modules()) == 4


def test_wrong_input_sizes_name_the_fix():
    with pytest.raises(ValueError, match="in_features: 784"):
        MLP(in_features=64)(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="in_channels"):
        SmallCNN(in_channels=3)(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="activation"):
        MLP(in_features=4, activation="swishy")


def test_feature_size_requires_out_features():
    with pytest.raises(ValueError, match="out_features"):
        feature_size(torch.nn.Identity())
    assert LinearHead(5, 3)(torch.randn(2, 5)).shape == (2, 3)
