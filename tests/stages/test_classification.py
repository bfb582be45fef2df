from functools import partial

import numpy as np
import pytest
import torch

from lifecycle.data import ImageClassificationDataModule, TabularDataModule
from lifecycle.models import MLP, SmallCNN
from lifecycle.stages import ClassificationModule
from tests.conftest import quiet_trainer


def test_multiclass_digits_learns_and_logs_every_metric(tmp_path):
    torch.manual_seed(0)
    dm = ImageClassificationDataModule("digits", batch_size=64)
    model = ClassificationModule(
        MLP(in_features=64, hidden=[64]),
        num_classes=10,
        optimizer=partial(torch.optim.Adam, lr=0.01),
    )
    trainer = quiet_trainer(tmp_path, max_epochs=5)
    trainer.fit(model, dm)
    assert {"train/loss", "train/accuracy", "val/f1", "val/auroc"} <= set(trainer.callback_metrics)
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert set(metrics) == {
        f"test/{k}" for k in ("loss", "accuracy", "precision", "recall", "f1", "auroc")
    }
    assert metrics["test/accuracy"] > 0.9 and metrics["test/auroc"] > 0.98
    details = model.report_details()
    assert np.array(details["confusion_matrix"]).sum() == len(dm.splits["test"])
    assert set(details["per_class"]["3"]) == {"precision", "recall", "f1", "auroc"}
    figures = model.report_figures()
    assert set(figures) == {"confusion_matrix", "roc_curve"}
    assert len(figures["roc_curve"].axes[0].lines) == 10 + 1  # one curve per class + the diagonal


def test_binary_classification_on_a_table(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    np.savez(tmp_path / "b.npz", x=x, y=y)
    dm = TabularDataModule(str(tmp_path / "b.npz"), task="classification", batch_size=32)
    model = ClassificationModule(
        MLP(in_features=3, hidden=[16]),
        num_classes=2,
        input_key="features",
        optimizer=partial(torch.optim.Adam, lr=0.02),
    )
    trainer = quiet_trainer(tmp_path, max_epochs=10)
    trainer.fit(model, dm)
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert metrics["test/accuracy"] > 0.9 and metrics["test/f1"] > 0.9
    assert len(model.report_figures()["roc_curve"].axes[0].lines) == 2  # positive class + diagonal


def test_l1_penalty_shrinks_weights(tmp_path):
    norms = {}
    for l1 in (0.0, 1e-3):
        torch.manual_seed(0)
        model = ClassificationModule(
            MLP(in_features=64, hidden=[32]),
            num_classes=10,
            l1_penalty=l1,
            optimizer=partial(torch.optim.Adam, lr=0.01),
        )
        quiet_trainer(tmp_path, max_epochs=3).fit(
            model, ImageClassificationDataModule("digits", batch_size=64)
        )
        norms[l1] = sum(p.abs().sum().item() for p in model.parameters() if p.ndim > 1)
    assert norms[1e-3] < 0.85 * norms[0.0]


def test_full_batch_gradient_descent_takes_one_step_per_epoch(tmp_path):
    dm = ImageClassificationDataModule("digits", batch_size="full")
    model = ClassificationModule(
        MLP(in_features=64, hidden=[32]), num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.5)
    )
    trainer = quiet_trainer(tmp_path, max_epochs=4)
    trainer.fit(model, dm)
    assert trainer.global_step == 4


def test_bad_arguments_are_rejected_with_the_field_name():
    backbone = SmallCNN(channels=[4])
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationModule(backbone, num_classes=1)
    with pytest.raises(ValueError, match="label_smoothing"):
        ClassificationModule(backbone, num_classes=3, label_smoothing=1.0)
    with pytest.raises(ValueError, match="class_weights"):
        ClassificationModule(backbone, num_classes=3, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="l1_penalty"):
        ClassificationModule(backbone, num_classes=3, l1_penalty=-1)


def test_missing_input_key_names_the_batch_fields():
    model = ClassificationModule(MLP(in_features=4, hidden=[4]), num_classes=2, input_key="image")
    with pytest.raises(KeyError, match=r"has \['features', 'label'\]"):
        model.training_step(
            {"features": torch.zeros(2, 4), "label": torch.zeros(2, dtype=torch.long)}, 0
        )


def test_backbone_and_head_are_exposed_for_later_stages():
    model = ClassificationModule(SmallCNN(channels=[4], hidden=8), num_classes=5, head_dropout=0.2)
    assert isinstance(model.backbone, SmallCNN) and model.head.linear.in_features == 8
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 5)


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    plain = ClassificationModule(SmallCNN(channels=[8, 16], hidden=16), num_classes=3)
    fast = ClassificationModule(
        SmallCNN(channels=[8, 16], hidden=16), num_classes=3, channels_last=True
    )
    fast.load_state_dict(plain.state_dict())
    plain.eval(), fast.eval()
    batch = {"image": torch.randn(4, 1, 12, 12), "label": torch.zeros(4, dtype=torch.long)}
    assert fast.inputs(batch)[0].is_contiguous(memory_format=torch.channels_last)
    assert fast.backbone.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(plain.forward_batch(batch), fast.forward_batch(batch), atol=1e-5)


def test_num_classes_mismatch_with_the_data_names_the_fix(tmp_path):
    model = ClassificationModule(MLP(in_features=64, hidden=[8]), num_classes=7)
    with pytest.raises(
        ValueError, match=r"data has 10 classes but the model's `num_classes` is 7.*num_classes: 10"
    ):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, ImageClassificationDataModule("digits"))


@pytest.mark.parametrize("algorithm", ["value", "norm"])
def test_trainer_gradient_clipping_bounds_the_update(tmp_path, algorithm):
    torch.manual_seed(0)
    model = ClassificationModule(
        MLP(in_features=64, hidden=[16]), num_classes=10, optimizer=partial(torch.optim.SGD, lr=1.0)
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(
        tmp_path,
        max_steps=1,
        gradient_clip_val=1e-3,
        gradient_clip_algorithm=algorithm,
        limit_val_batches=0,
    )
    trainer.fit(model, ImageClassificationDataModule("digits", batch_size=32))
    deltas = [(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)]
    # with SGD at lr=1 the update is minus the clipped gradient
    if algorithm == "value":
        assert max(d.abs().max().item() for d in deltas) <= 1e-3 + 1e-7
    else:
        assert torch.cat(deltas).norm().item() <= 1e-3 * (1 + 1e-4)
    assert torch.cat(deltas).abs().max().item() > 0


class Recorder(torch.nn.Module):
    """A linear backbone that keeps the last input it saw."""

    def __init__(self, in_features):
        super().__init__()
        self.linear = torch.nn.Linear(in_features, 4)
        self.out_features = 4

    def forward(self, x):
        self.seen = x.detach().clone()
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_mixing_blends_inputs_and_weighs_both_targets_by_lam(mix, monkeypatch):
    torch.manual_seed(0)
    model = ClassificationModule(Recorder(64), num_classes=3, mix=mix)
    x = torch.randn(6, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    monkeypatch.setattr(torch.distributions.Beta, "sample", lambda self: torch.tensor(0.75))
    monkeypatch.setattr(torch, "randperm", lambda n, device=None: perm)
    loss = model.training_step({"image": x, "label": y}, 0)
    seen = model.backbone.seen
    if mix == "mixup":
        lam = 0.75
        assert torch.allclose(seen, 0.75 * x + 0.25 * x[perm])
    else:
        pasted = (seen != x).flatten(1).any(0).reshape(8, 8)
        assert 0 < pasted.sum() <= 16  # one box of at most 4x4 = (1 - 0.75) of 8x8
        lam = 1 - pasted.sum().item() / 64
        assert torch.equal(seen[..., pasted], x[perm][..., pasted])
    logits = model.head(model.backbone.linear(seen.flatten(1)))
    expected = lam * torch.nn.functional.cross_entropy(logits, y) + (
        1 - lam
    ) * torch.nn.functional.cross_entropy(logits, y[perm])
    assert torch.allclose(loss, expected, atol=1e-6)


def test_mixup_still_learns_digits_and_never_mixes_evaluation(tmp_path):
    torch.manual_seed(0)
    dm = ImageClassificationDataModule("digits", batch_size=64)
    model = ClassificationModule(
        MLP(in_features=64, hidden=[64]),
        num_classes=10,
        mix="mixup",
        optimizer=partial(torch.optim.Adam, lr=0.01),
    )
    trainer = quiet_trainer(tmp_path, max_epochs=8)
    trainer.fit(model, dm)
    assert trainer.test(model, dm, verbose=False)[0]["test/accuracy"] > 0.9


def test_mixing_token_ids_is_a_clear_error():
    from lifecycle.models import TextCNN

    model = ClassificationModule(
        TextCNN(vocab_size=20, embedding_dim=4, num_filters=2), 2, mix="mixup"
    )
    batch = {
        "input_ids": torch.ones(2, 5, dtype=torch.long),
        "attention_mask": torch.ones(2, 5, dtype=torch.long),
        "label": torch.tensor([0, 1]),
    }
    with pytest.raises(
        ValueError, match=r"`mix: mixup` needs float inputs.*token ids cannot be mixed"
    ):
        model.training_step(batch, 0)
    with pytest.raises(ValueError, match="'mixup', 'cutmix' or null"):
        ClassificationModule(MLP(in_features=4), 2, mix="mixcut")


@pytest.mark.slow
def test_a_fine_tuned_checkpoint_reloads_after_its_pretrained_folder_is_deleted(tmp_path):
    import json
    import shutil

    from lifecycle.artifacts import save_backbone
    from lifecycle.cli import main

    save_backbone(tmp_path / "pre", SmallCNN(channels=[4], pool_size=2, hidden=8))
    recipe = tmp_path / "finetune.yaml"
    recipe.write_text(
        f"""
test_after_fit: true
trainer:
  {{max_epochs: 1, limit_train_batches: 2, limit_val_batches: 1, limit_test_batches: 2,
   accelerator: cpu, logger: false, enable_progress_bar: false, enable_model_summary: false,
   default_root_dir: {tmp_path / "run"}}}
model:
  class_path: lifecycle.stages.ClassificationModule
  init_args:
    num_classes: 10
    backbone:
      class_path: lifecycle.artifacts.load_backbone
      init_args: {{path: {tmp_path / "pre"}}}
data:
  class_path: lifecycle.data.ImageClassificationDataModule
  init_args: {{dataset: digits, batch_size: 32}}
"""
    )
    main(["fit", "--config", str(recipe)])
    fitted = json.loads((tmp_path / "run" / "metrics.json").read_text())
    (checkpoint,) = (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")
    shutil.rmtree(tmp_path / "pre")

    hparams = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert hparams["backbone"] == {
        "class_path": "lifecycle.models.vision.SmallCNN",
        "init_args": {"in_channels": 1, "channels": [4], "convs_per_block": 2, "pool_size": 2,
                      "hidden": 8, "dropout": 0.25},
    }  # fmt: skip
    model = ClassificationModule.load_from_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert isinstance(model.backbone, SmallCNN)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())

    main(["test", "--config", str(recipe), "--ckpt_path", str(checkpoint)])
    tested = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert tested["checkpoint"] == fitted["checkpoint"] == str(checkpoint)
    assert tested["metrics"]["accuracy"] == pytest.approx(fitted["metrics"]["accuracy"])
    assert tested["metrics"]["loss"] == pytest.approx(fitted["metrics"]["loss"])


def tiny_cnn():
    return SmallCNN(channels=[4], convs_per_block=1, pool_size=2, hidden=8)


@pytest.mark.slow
def test_a_checkpoint_loads_with_compile_switched_off_or_on(tmp_path, monkeypatch):
    # the keys do not depend on the backend; inductor's code generation takes 30 s on 2 CPUs
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="eager")
    )
    torch.manual_seed(0)
    dm = ImageClassificationDataModule("digits", batch_size=32)
    compiled = ClassificationModule(tiny_cnn(), num_classes=10, compile=True)
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(compiled, dm)
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    assert not any("_orig_mod" in k for k in compiled.state_dict())

    plain = ClassificationModule.load_from_checkpoint(
        tmp_path / "compiled.ckpt", backbone=tiny_cnn(), compile=False
    )
    x = torch.randn(3, 1, 8, 8)
    compiled.eval(), plain.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x), plain(x), atol=1e-5)

    # and the other way: weights trained without compile go into a compiled model as they are
    recompiled = ClassificationModule(tiny_cnn(), num_classes=10, compile=True)
    recompiled.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.allclose(recompiled.eval()(x), plain(x), atol=1e-5)


def test_a_checkpoint_saved_under_the_old_compile_wrapper_still_loads():
    model = ClassificationModule(tiny_cnn(), num_classes=3)
    state = {
        k.replace("backbone.", "backbone._orig_mod.", 1): v for k, v in model.state_dict().items()
    }
    checkpoint = {"state_dict": state}
    fresh = ClassificationModule(tiny_cnn(), num_classes=3)
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
