from torch import nn


class TinyNet(nn.Module):
    """Any nn.Module is a backbone once it says `out_features` (lifecycle.interfaces.BackboneLike)."""

    input_keys = ("pixels",)  # optional: the batch fields it reads (default: "image")

    def __init__(self, in_features: int = 64, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, width), nn.Tanh())
        self.out_features = width  # required: the head is sized from it

    def forward(self, pixels):
        return self.net(pixels)
