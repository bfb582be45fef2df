"""GPU-only paths: FSDP1 with norm clipping and block wrapping, 16-mixed with GradientHealth,
DeepSpeed ZeRO-2. Skipped, with the reason, on machines without CUDA (CI has none); run them on
a GPU machine with ``pytest tests/training/test_gpu.py``."""

import importlib.util

import lightning as L
import pytest
import torch

from lifecycle.models import MLP
from lifecycle.stages import ClassificationModule
from lifecycle.training.health import GradientHealth
from lifecycle.training.strategies import FSDPStrategy

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def data():
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 64, generator=g), torch.randint(0, 10, (256,), generator=g)

    def loader():
        return DataLoader(
            [{"image": a, "label": b} for a, b in zip(x, y, strict=True)], batch_size=32
        )

    return loader()


def fit(strategy, precision="32-true", clip=None, algorithm="norm", callbacks=()):
    torch.manual_seed(0)
    model = ClassificationModule(MLP(in_features=64, hidden=[128, 64]), num_classes=10)
    trainer = L.Trainer(accelerator="gpu", devices=1, strategy=strategy, precision=precision,
                        max_steps=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, gradient_clip_val=clip,
                        gradient_clip_algorithm=algorithm, callbacks=list(callbacks))  # fmt: skip
    trainer.fit(model, data())
    return model, trainer


@needs_gpu
def test_fsdp1_clips_by_norm_where_lightning_raises_and_wraps_blocks():
    model, trainer = fit(FSDPStrategy(), clip=0.05)
    from torch.distributed.fsdp import FullyShardedDataParallel

    wrapped = [
        m for m in trainer.strategy.model.modules() if isinstance(m, FullyShardedDataParallel)
    ]
    assert len(wrapped) > 1  # the root and one unit per Linear layer
    reference, _ = fit("auto", clip=0.05)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a.cpu().float(), b.cpu().float(), rtol=1e-4, atol=1e-5)


@needs_gpu
def test_16_mixed_unscaled_gradients_reach_gradient_health():
    health = GradientHealth(log_every_n_steps=1, exploding_above=1e3)
    fit("auto", precision="16-mixed", clip=1.0, callbacks=[health])
    # the loss scale (65536 at start) would make every step look exploding if not unscaled first
    assert not [e for e in health.events if e[1] == "exploding"]


@needs_gpu
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")
def test_deepspeed_zero2_clips_by_norm_and_refuses_value():
    fit("deepspeed_stage_2", precision="16-mixed", clip=1.0)
    with pytest.raises(ValueError, match="DeepSpeed cannot clip gradients by value"):
        fit("deepspeed_stage_2", precision="16-mixed", clip=1.0, algorithm="value")
