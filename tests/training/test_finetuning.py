"""Fine-tuning strategies: what trains when, at which learning rate, with every scheduler."""

from functools import partial

import lightning as L
import pytest
import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
)

from lifecycle.data import ImageClassificationDataModule
from lifecycle.models import MLP
from lifecycle.stages import ClassificationModule
from lifecycle.training.finetuning import (
    DiscriminativeLR,
    FreezeUnfreeze,
    GradualUnfreezing,
    LinearProbe,
    layer_groups,
)
from lifecycle.training.optim import WarmupCosineLR
from tests.conftest import quiet_trainer

STEPS_PER_EPOCH = 4


def weights_of(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Trace(L.Callback):
    """The weights at the start, each step's learning rates (one per parameter group), and the
    weights at the end of each epoch."""

    def __init__(self):
        self.initial: dict[str, torch.Tensor] = {}
        self.lrs: list[list[float]] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_fit_start(self, trainer, pl_module):
        self.initial = weights_of(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    def on_train_epoch_end(self, trainer, pl_module):
        self.weights.append(weights_of(pl_module))


def changed(trace: Trace, epoch: int, key: str) -> bool:
    before = trace.weights[epoch - 1][key] if epoch else trace.initial[key]
    return not torch.equal(before, trace.weights[epoch][key])


def fit(tmp_path, callback, epochs=3, scheduler=None, batch_norm=False, lr=0.01, **trainer_kw):
    torch.manual_seed(0)
    model = ClassificationModule(
        MLP(in_features=64, hidden=[32, 32], batch_norm=batch_norm),
        num_classes=10,
        optimizer=partial(torch.optim.AdamW, lr=lr),
        scheduler=scheduler,
    )
    trace = Trace()
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=epochs,
        limit_train_batches=STEPS_PER_EPOCH,
        limit_val_batches=2,
        callbacks=[c for c in (callback, trace) if c is not None],
        **trainer_kw,
    )
    trainer.fit(model, ImageClassificationDataModule("digits", batch_size=32))
    return model, trace, trainer


# MLP(64 -> 32 -> 32): layers = [Flatten, Linear, (BN), ReLU, Dropout, Linear, ...]
BOTTOM, TOP, HEAD = "backbone.layers.1.weight", "backbone.layers.4.weight", "head.linear.weight"


def test_layer_groups_of_a_plain_backbone_are_its_layers_bottom_to_top():
    mlp = MLP(in_features=64, hidden=[32, 16])
    groups = layer_groups(mlp)
    assert [g.out_features for g in groups] == [32, 16]


def test_linear_probe_keeps_the_backbone_and_its_batchnorm_statistics_fixed(tmp_path):
    model, trace, _ = fit(tmp_path, LinearProbe(), epochs=2, batch_norm=True)
    stats = "backbone.layers.2.running_mean"
    assert not changed(trace, 1, BOTTOM) and not changed(trace, 1, stats)
    assert torch.equal(trace.weights[-1][stats], trace.initial[stats])  # BatchNorm ran in eval mode
    assert changed(trace, 0, HEAD) and changed(trace, 1, HEAD)
    assert all(len(lrs) == 1 for lrs in trace.lrs)  # the backbone never joins the optimizer


def test_linear_probe_learns_a_useful_head(tmp_path):
    torch.manual_seed(0)
    model = ClassificationModule(
        MLP(in_features=64, hidden=[256]), num_classes=10,
        optimizer=partial(torch.optim.AdamW, lr=0.02),
    )  # fmt: skip
    data = ImageClassificationDataModule("digits", batch_size=32)
    trainer = quiet_trainer(tmp_path, max_epochs=8, callbacks=[LinearProbe()])
    trainer.fit(model, data)
    # random ReLU features of 256 units are nearly linearly separable on the digits
    assert trainer.test(model, data, verbose=False)[0]["test/accuracy"] > 0.85


def test_freeze_unfreeze_trains_the_head_first_then_the_backbone_at_its_scale(tmp_path):
    _, trace, _ = fit(tmp_path, FreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_scale=0.1))
    assert changed(trace, 0, HEAD) and not changed(trace, 0, BOTTOM) and not changed(trace, 0, TOP)
    assert changed(trace, 1, BOTTOM) and changed(trace, 1, TOP)
    # the backbone's group is there from the first step, at its scale, and trains from epoch 1
    for head, backbone in trace.lrs:
        assert backbone == pytest.approx(0.1 * head)


SCHEDULERS = {
    "warmup_cosine": partial(WarmupCosineLR, warmup_steps=2),
    "one_cycle": partial(OneCycleLR, max_lr=0.05),
    "step": partial(StepLR, step_size=1, gamma=0.5),
    "cosine": partial(CosineAnnealingLR, T_max=5),
    # mode "max" on a falling val/loss: the rate halves after every epoch
    "plateau": partial(ReduceLROnPlateau, mode="max", factor=0.5, patience=0),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_an_added_group_follows_every_scheduler_at_its_scale(tmp_path, name):
    """Flash#1321: adding a parameter group after the scheduler was built broke it (LambdaLR
    raises; others leave the new group at a constant rate). Here it keeps its ratio to the
    head's rate while that rate moves."""
    _, trace, trainer = fit(
        tmp_path, FreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_scale=0.25), epochs=4,
        scheduler=SCHEDULERS[name],
    )  # fmt: skip
    after = trace.lrs[STEPS_PER_EPOCH:]
    assert all(len(lrs) == 2 for lrs in after)
    for head, backbone in after:
        assert backbone == pytest.approx(0.25 * head, rel=1e-6)
    assert len({round(lrs[1], 12) for lrs in after}) > 1, "the new group's rate never moved"
    if name == "one_cycle":
        group = trainer.optimizers[0].param_groups[1]
        assert group["max_lr"] == pytest.approx(0.25 * 0.05)


def test_gradual_unfreezing_adds_one_group_per_epoch_from_the_top(tmp_path):
    _, trace, _ = fit(tmp_path, GradualUnfreezing(start_epoch=1, lr_decay=0.5), epochs=3)
    assert not changed(trace, 0, TOP) and not changed(trace, 0, BOTTOM)
    assert changed(trace, 1, TOP) and not changed(trace, 1, BOTTOM)
    assert changed(trace, 2, TOP) and changed(trace, 2, BOTTOM)
    head, top, bottom = trace.lrs[-1]
    assert (top, bottom) == (pytest.approx(0.5 * head), pytest.approx(0.25 * head))


def test_discriminative_lr_trains_everything_from_the_start_at_decaying_rates(tmp_path):
    _, trace, _ = fit(tmp_path, DiscriminativeLR(lr_decay=0.5), epochs=1)
    assert changed(trace, 0, HEAD) and changed(trace, 0, TOP) and changed(trace, 0, BOTTOM)
    for head, top, bottom in trace.lrs:
        assert (top, bottom) == (pytest.approx(0.5 * head), pytest.approx(0.25 * head))


def test_a_resumed_run_keeps_the_unfrozen_backbone_training(tmp_path):
    data = ImageClassificationDataModule("digits", batch_size=32)

    def run(epochs, ckpt_path=None):
        torch.manual_seed(0)
        module = ClassificationModule(
            MLP(in_features=64, hidden=[32, 32]), num_classes=10,
            optimizer=partial(torch.optim.AdamW, lr=0.01),
        )  # fmt: skip
        trace = Trace()
        trainer = quiet_trainer(
            tmp_path, max_epochs=epochs, limit_train_batches=STEPS_PER_EPOCH, limit_val_batches=1,
            callbacks=[FreezeUnfreeze(unfreeze_at_epoch=1), trace], enable_checkpointing=True,
        )  # fmt: skip
        # the checkpoint holds the Python-built optimizer factory (a partial): trusted, ours
        trainer.fit(module, data, ckpt_path=ckpt_path, weights_only=False)
        return module, trace, trainer

    first, _, trainer = run(2)
    saved = trainer.checkpoint_callback.best_model_path
    resumed, trace, trainer = run(3, ckpt_path=saved)
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 2 and all(p.requires_grad for p in resumed.backbone.parameters())
    assert not torch.equal(trace.weights[-1][BOTTOM], first.state_dict()[BOTTOM])
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="lr_decay"):
        DiscriminativeLR(lr_decay=1.5)
    with pytest.raises(ValueError, match="unfreeze_at_epoch"):
        FreezeUnfreeze(unfreeze_at_epoch=-1)
    with pytest.raises(ValueError, match="Two fine-tuning callbacks"):
        model = ClassificationModule(MLP(in_features=64, hidden=[8]), num_classes=10)
        trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[LinearProbe(), FreezeUnfreeze()])
        trainer.fit(model, ImageClassificationDataModule("digits", batch_size=32))
    with pytest.raises(ValueError, match="backbone_attr"):
        model = ClassificationModule(MLP(in_features=64, hidden=[8]), num_classes=10)
        callback = LinearProbe(backbone_attr="encoder")
        trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[callback])
        trainer.fit(model, ImageClassificationDataModule("digits", batch_size=32))


def test_an_optimizer_built_without_the_declared_groups_is_refused(tmp_path):
    from lifecycle.errors import ConfigError

    class OwnOptimizer(ClassificationModule):
        def configure_optimizers(self):  # Lightning's BaseFinetuning idiom: trainable ones only
            return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad])

    model = OwnOptimizer(MLP(in_features=64, hidden=[8]), num_classes=10)
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[FreezeUnfreeze()])
    with pytest.raises(ConfigError, match="in no parameter group of the optimizer"):
        trainer.fit(model, ImageClassificationDataModule("digits", batch_size=32))
