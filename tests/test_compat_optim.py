"""``lifecycle.compat.factory_target`` / ``factory_keyword`` read the factories jsonargparse
builds from a config's ``class_path``/``init_args`` (checked on jsonargparse 4.53.0): an upgrade
that changes their shape fails here."""

import functools

import torch
from jsonargparse import ArgumentParser
from torch.optim.lr_scheduler import OneCycleLR

from lifecycle.compat import factory_keyword, factory_target
from lifecycle.training.optim import SchedulerFactory


def test_jsonargparse_factories_name_their_class_and_keywords():
    parser = ArgumentParser()
    parser.add_argument("--scheduler", type=SchedulerFactory)
    config = parser.parse_args(
        ['--scheduler={"class_path": "torch.optim.lr_scheduler.OneCycleLR", '
         '"init_args": {"max_lr": 0.5, "epochs": 3, "steps_per_epoch": 4}}']
    )  # fmt: skip
    factory = parser.instantiate_classes(config).scheduler
    assert factory_target(factory) is OneCycleLR
    assert factory_keyword(factory, "epochs") == 3
    assert factory_keyword(factory, "total_steps") is None
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert isinstance(factory(optimizer), OneCycleLR)  # the factory still builds the class


def test_hand_written_factories_are_read_too():
    factory = functools.partial(OneCycleLR, max_lr=0.5, total_steps=10)
    assert factory_target(factory) is OneCycleLR
    assert factory_keyword(factory, "total_steps") == 10
    assert factory_target(OneCycleLR) is OneCycleLR and factory_keyword(OneCycleLR, "x") is None
