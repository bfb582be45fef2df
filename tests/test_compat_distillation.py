"""``lifecycle.compat.MovesUnregisteredModules`` still overrides the method every device and
dtype move of an ``nn.Module`` goes through (``torch.nn.Module._apply(fn, recurse=True)``,
checked on torch 2.13.0): an upgrade that renames it or routes a move around it fails here."""

import inspect

import torch
from torch import nn

from lifecycle.compat import MovesUnregisteredModules


class Holder(MovesUnregisteredModules, nn.Module):
    def __init__(self):
        super().__init__()
        self.own = nn.Linear(2, 2)
        object.__setattr__(self, "held", nn.Linear(2, 2))  # not a registered submodule

    def unregistered_modules(self):
        return [self.held]


def test_torch_still_routes_moves_through_apply_with_its_signature():
    assert list(inspect.signature(nn.Module._apply).parameters)[:3] == ["self", "fn", "recurse"]


def test_every_move_reaches_the_unregistered_module_and_only_moves_it():
    holder = Holder()
    assert "held" not in dict(holder.named_children())
    assert holder.to(torch.float64) is holder
    assert holder.held.weight.dtype == holder.own.weight.dtype == torch.float64
    holder.half()
    assert holder.held.weight.dtype == torch.float16
    holder.to(torch.bfloat16)
    assert holder.held.bias.dtype == torch.bfloat16
    holder.float()
    assert holder.held.weight.dtype == torch.float32
    holder.to("meta")
    assert holder.held.weight.device.type == "meta"
    assert not any(k.startswith("held") for k in holder.state_dict())
