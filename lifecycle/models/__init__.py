"""Backbones and heads. Every stage module holds a ``backbone`` and a ``head``."""

from lifecycle.models.base import Backbone
from lifecycle.models.heads import LinearHead, feature_size
from lifecycle.models.pretrained_vision import EfficientNetLite0
from lifecycle.models.text import PretrainedTransformer, RNNEncoder, TextCNN, TransformerEncoder
from lifecycle.models.vision import MLP, SmallCNN, SmallResNet

__all__ = [
    "Backbone",
    "MLP",
    "SmallCNN",
    "SmallResNet",
    "EfficientNetLite0",
    "RNNEncoder",
    "TextCNN",
    "TransformerEncoder",
    "PretrainedTransformer",
    "LinearHead",
    "feature_size",
]
