"""GradientHealth: NaN/Inf steps skipped or stopped with the step and layer named; exploding and
vanishing gradients reported; norms logged."""

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lifecycle.training.health import GradientHealth, NonFiniteGradientError


class Tiny(L.LightningModule):
    """Three linear layers; ``nan_at`` turns the loss into NaN at that step, ``scale`` scales it,
    ``blow_up`` multiplies one layer's gradient."""

    def __init__(self, nan_at=None, scale=1.0, blow_up=None, lr=0.1):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)
        )
        self.nan_at, self.scale, self.lr = nan_at, scale, lr
        if blow_up is not None:
            self.net[blow_up].weight.register_hook(lambda g: g * 1e6)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y) * self.scale
        if self.global_step == self.nan_at:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def fit(module, callbacks, steps=8):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=8))
    return trainer


def test_a_nan_loss_step_is_skipped_with_the_step_and_layer_named():
    health = GradientHealth(on_nonfinite="skip")
    weights = {}

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            weights[trainer.global_step] = pl_module.net[0].weight.detach().clone()

    module = Tiny(nan_at=3)
    fit(module, [health, Watch()])
    skips = [e for e in health.events if e[1] == "skip"]
    assert [e[0] for e in skips] == [3]
    assert "step 3" in skips[0][2] and "net.0" in skips[0][2] and "loss was nan" in skips[0][2]
    assert all(torch.isfinite(p).all() for p in module.parameters())
    # the skipped step left the weights as they were; the steps around it moved them
    assert torch.equal(weights[3], weights[4])
    assert not torch.equal(weights[2], weights[3]) and not torch.equal(weights[4], weights[5])


def test_stop_raises_naming_the_step_and_the_layer():
    with pytest.raises(NonFiniteGradientError, match=r"step 2 \(epoch 0\) in net\.0 and 2 more"):
        fit(Tiny(nan_at=2), [GradientHealth(on_nonfinite="stop")])


def test_an_exploding_layer_is_named_first():
    health = GradientHealth(exploding_above=1e3)
    fit(Tiny(blow_up=2, lr=1e-9), [health], steps=4)
    exploding = [e for e in health.events if e[1] == "exploding"]
    # reported at the 1st, 2nd and 4th exploding step, the blown-up layer first
    assert [e[0] for e in exploding] == [0, 1, 3]
    assert "largest in net.2 (" in exploding[0][2]


def test_vanishing_gradients_are_reported_once_they_last():
    health = GradientHealth(vanishing_below=1e-6, vanishing_steps=5)
    fit(Tiny(scale=1e-9), [health], steps=8)
    vanishing = [e for e in health.events if e[1] == "vanishing"]
    assert [e[0] for e in vanishing] == [4]
    assert not [e for e in GradientHealth().events]
    quiet = GradientHealth(vanishing_below=1e-6, vanishing_steps=5)
    fit(Tiny(), [quiet], steps=8)
    assert quiet.events == []


def test_layer_norms_match_torch_and_are_logged():
    health = GradientHealth(log_every_n_steps=1)
    module = Tiny()
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    nn.functional.cross_entropy(module.net(x), y).backward()
    norms = health.layer_norms(module)
    assert list(norms) == ["net.0", "net.2", "net.4"]
    expected = torch.cat([module.net[0].weight.grad.flatten(), module.net[0].bias.grad]).norm()
    assert norms["net.0"] == pytest.approx(float(expected), rel=1e-5)
    assert GradientHealth(depth=1).layer_norms(module) == pytest.approx(
        {"net": float(torch.nn.utils.get_total_norm([p.grad for p in module.parameters()]))}
    )
    trainer = fit(Tiny(), [health], steps=3)
    assert {"grad_norm/global", "grad_norm/net.0", "grad_norm/net.4"} <= set(trainer.logged_metrics)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="`on_nonfinite` must be 'skip' or 'stop'"):
        GradientHealth(on_nonfinite="ignore")
    with pytest.raises(ValueError, match="vanishing_below"):
        GradientHealth(vanishing_below=10, exploding_above=1)


def test_the_global_norm_is_lightnings_grad_norm_total_and_layers_group_its_parameters():
    from lightning.pytorch.utilities import grad_norm

    module = Tiny()
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    nn.functional.cross_entropy(module.net(x), y).backward()
    norms = GradientHealth().layer_norms(module)
    lightning = grad_norm(module, 2)
    total = sum(v * v for v in norms.values()) ** 0.5
    assert total == pytest.approx(float(lightning["grad_2.0_norm_total"]), rel=1e-6)
    assert list(norms) == ["net.0", "net.2", "net.4"]  # one per layer; Lightning's: per parameter
    weight, bias = (float(lightning[f"grad_2.0_norm/net.2.{k}"]) for k in ("weight", "bias"))
    assert norms["net.2"] == pytest.approx((weight**2 + bias**2) ** 0.5, rel=1e-6)


def test_a_skipped_step_under_clipping_by_value_trains_on():
    # a skipped step leaves no gradient: clipping by value must not hand torch an empty list
    from lifecycle.training.clipping import ShardedClipping

    class Clipped(ShardedClipping, Tiny):
        pass

    health = GradientHealth(on_nonfinite="skip")
    module = Clipped(nan_at=3)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g))
    trainer = L.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[health],
                        gradient_clip_val=0.001, gradient_clip_algorithm="value")  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=8))
    assert trainer.global_step == 8
    assert [e[0] for e in health.events if e[1] == "skip"] == [3]
    assert all(torch.isfinite(p).all() for p in module.parameters())
