"""``Backbone``: the base of the toolkit's backbones, which remember how they were built."""

from __future__ import annotations

import functools
import inspect
from typing import ClassVar

from torch import nn


class Backbone(nn.Module):
    """An ``nn.Module`` that records the arguments it was built with in ``init_args``, so a
    pretraining stage can save it and :func:`lifecycle.artifacts.load_backbone` rebuild it.

    Subclasses set ``out_features`` (the feature size a head receives) and, for inputs other
    than ``image``, ``input_keys`` and ``input_kind``. A user's backbone need not derive from it: one built from a
    recipe (``class_path``/``init_args``) is saved from the recipe's entry.
    """

    init_args: dict
    # what a folder of this backbone is for (lifecycle.artifacts.save_backbone's `kind`):
    # "image", "text" or "features"; a subclass taking other inputs says so
    input_kind: ClassVar[str] = "image"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            init(self, *args, **kw)
            bound = signature.bind(self, *args, **kw)
            bound.apply_defaults()
            # the outermost __init__ finishes last, so a subclass's arguments win
            self.init_args = {k: v for k, v in list(bound.arguments.items())[1:]}

        cls.__init__ = recording_init
