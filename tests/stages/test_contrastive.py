"""SimCLR: the NT-Xent loss, training on unlabeled views, the saved backbone, and fine-tuning from it."""

import json
import math

import albumentations as A
import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lifecycle.artifacts import MANIFEST, load_backbone
from lifecycle.data import ImageClassificationDataModule
from lifecycle.data.augment import build_pipeline
from lifecycle.models import SmallCNN
from lifecycle.stages import ClassificationModule, ContrastivePretrainingModule
from lifecycle.stages.contrastive import nt_xent
from tests.conftest import quiet_trainer


def reference_nt_xent(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    """SimCLR's loss and top-1 twin accuracy written out pair by pair (2 views, rows i and i + n)."""
    n = len(z) // 2
    z = F.normalize(z, dim=1)
    total, hits = 0.0, 0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        sims = torch.stack([z[i] @ z[k] / temperature for k in others])
        positive = z[i] @ z[j] / temperature
        total += -(positive - torch.logsumexp(sims, 0))
        hits += others[int(sims.argmax())] == j
    return total / (2 * n), hits / (2 * n)


def test_nt_xent_matches_the_loss_written_out_pair_by_pair():
    z = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    loss, top1 = nt_xent(z, views=2, temperature=0.3)
    reference_loss, reference_top1 = reference_nt_xent(z, 0.3)
    assert loss.item() == pytest.approx(reference_loss.item(), rel=1e-5)
    assert top1.item() == pytest.approx(reference_top1)


def test_nt_xent_is_low_when_views_agree_and_high_when_they_do_not():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(16, 32, generator=g)
    agree, top1 = nt_xent(
        torch.cat([images, images + 0.01 * torch.randn(16, 32, generator=g)]), 2, 0.1
    )
    unrelated, _ = nt_xent(torch.randn(32, 32, generator=g), 2, 0.1)
    assert top1.item() == 1.0
    assert agree.item() < 0.1 < math.log(31) - 1 < unrelated.item()


def test_nt_xent_with_three_views_averages_over_two_positives():
    z = torch.randn(9, 4, generator=torch.Generator().manual_seed(2))
    loss, _ = nt_xent(z, views=3, temperature=0.5)
    zn = F.normalize(z, dim=1)
    sim = (zn @ zn.T / 0.5).fill_diagonal_(float("-inf"))
    log_prob = sim.log_softmax(1)
    expected = -torch.stack(
        [(log_prob[i, (i + 3) % 9] + log_prob[i, (i + 6) % 9]) / 2 for i in range(9)]
    ).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def digits(tmp_path, views=2, **kwargs):
    return ImageClassificationDataModule(
        "digits",
        batch_size=kwargs.pop("batch_size", 64),
        views=views,
        train_transforms=kwargs.pop("train_transforms", "simclr") if views > 1 else None,
        val_fraction=0.1,
        test_fraction=0.2,
        **kwargs,
    )


def small_cnn():
    return SmallCNN(
        in_channels=1, channels=(16, 32), convs_per_block=1, pool_size=2, hidden=64, dropout=0.0
    )


def test_a_batch_without_views_is_an_error_that_says_how_to_get_them(tmp_path):
    model = ContrastivePretrainingModule(small_cnn())
    with pytest.raises(ValueError, match=r"views: 2.*train_transforms"):
        quiet_trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=digits(tmp_path, views=1))


def test_a_fast_dev_run_writes_no_pretrained_folder(tmp_path, monkeypatch):
    # fast_dev_run swaps the logger for one without a folder: the backbone once went to the
    # working directory's "None/pretrained"
    monkeypatch.chdir(tmp_path)
    model = ContrastivePretrainingModule(small_cnn())
    trainer = quiet_trainer(tmp_path, fast_dev_run=True, logger=True)
    trainer.fit(model, datamodule=digits(tmp_path))
    assert trainer.global_step == 1
    assert not list(tmp_path.rglob("pretrained")) and not (tmp_path / "None").exists()


def test_data_too_small_for_one_batch_is_an_error(tmp_path):
    data = digits(tmp_path, batch_size=256, train_subset=100)
    model = ContrastivePretrainingModule(small_cnn())
    with pytest.raises(ValueError, match=r"100 images but a batch takes 256.*batch_size"):
        quiet_trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=data)


def test_validation_batches_hold_fixed_views_beside_the_plain_image(tmp_path):
    data = digits(tmp_path)
    data.setup("fit")
    first = next(iter(data.val_dataloader()))
    again = next(iter(data.val_dataloader()))
    assert first["views"].shape[:2] == (64, 2)
    assert torch.equal(first["views"], again["views"])  # the same views every epoch
    assert not torch.equal(first["views"][:, 0], first["image"])  # the image stays plain
    assert torch.equal(first["image"], data._datasets["val"].tensor[:64])


def features(backbone, data, split):
    dataset = data._datasets[split]
    backbone.eval()
    with torch.no_grad():
        return backbone(dataset.tensor).numpy(), dataset.labels.numpy()


def probe_accuracy(backbone, data) -> float:
    from sklearn.linear_model import LogisticRegression

    xtr, ytr = features(backbone, data, "val")  # 144 labelled images (the train split is augmented)
    xte, yte = features(backbone, data, "test")
    clf = LogisticRegression(max_iter=3000).fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def test_simclr_learns_features_that_separate_classes_it_never_saw_and_saves_the_backbone(tmp_path):
    L.seed_everything(0)
    data = digits(tmp_path)
    model = ContrastivePretrainingModule(
        small_cnn(), temperature=0.2, save_to=str(tmp_path / "pre")
    )
    random_backbone = small_cnn()
    random_backbone.load_state_dict(model.backbone.state_dict())  # the weights before training
    trainer = quiet_trainer(tmp_path, max_epochs=15)
    trainer.fit(model, datamodule=data)
    logged = trainer.callback_metrics
    # a view finds its twin among 127 other rows 1 time in 127 by chance
    assert logged["val/top1"] > 0.2
    # the saved backbone is the trained one, without the projection head
    folder = tmp_path / "pre"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["kind"] == "image" and manifest["produced_by"]["objective"] == "simclr"
    assert manifest["backbone"]["class_path"] == "lifecycle.models.vision.SmallCNN"
    assert manifest["backbone"]["init_args"]["channels"] == [16, 32]
    assert manifest["mean"] == pytest.approx(data.mean)
    # the pretraining's own augmentation is recorded (SimCLR's crops, not the fine-tuning's)
    recorded = json.loads((folder / "transforms.json").read_text())["train_transforms"]
    simclr = json.loads(json.dumps(A.to_dict(build_pipeline("simclr"))))
    assert recorded["transform"]["transforms"] == simclr["transform"]["transforms"]
    loaded = load_backbone(str(folder))
    assert set(loaded.state_dict()) == set(model.backbone.state_dict())  # no projection keys
    assert all(
        torch.equal(v, model.backbone.state_dict()[k]) for k, v in loaded.state_dict().items()
    )
    # labels were never used, yet a linear probe on 144 labels beats the same on random weights
    pretrained, untrained = probe_accuracy(loaded, data), probe_accuracy(random_backbone, data)
    assert pretrained > untrained + 0.05, (pretrained, untrained)


def test_fine_tuning_reads_the_pretrained_normalization(tmp_path):
    L.seed_everything(0)
    pre = digits(tmp_path)
    model = ContrastivePretrainingModule(small_cnn(), save_to=str(tmp_path / "pre"))
    quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(model, datamodule=pre)
    # fine-tuning on a 100-image subset: its own statistics would differ from the 1.4k images'
    data = ImageClassificationDataModule("digits", batch_size=32, train_subset=100, seed=3)
    classifier = ClassificationModule(load_backbone(str(tmp_path / "pre")), num_classes=10)
    quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(classifier, datamodule=data)
    assert data.mean == pytest.approx(pre.mean) and data.std == pytest.approx(pre.std)
    expected = (data.splits["train"].x[:3].astype(np.float32) / 255 - pre.mean) / pre.std
    got = data._datasets["train"].tensor[:3].permute(0, 2, 3, 1).numpy()
    assert np.allclose(got, expected, atol=1e-5)


PRETRAIN_RECIPE = """
seed_everything: 7
trainer:
  max_epochs: 2
  accelerator: cpu
  devices: 1
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
  limit_val_batches: 1
  callbacks:
    - class_path: lifecycle.training.ResumableCheckpoint
      init_args: {every_n_train_steps: 3}
model:
  class_path: lifecycle.stages.ContrastivePretrainingModule
  init_args:
    backbone:
      class_path: lifecycle.models.SmallCNN
      init_args: {in_channels: 1, channels: [8, 16], convs_per_block: 1, pool_size: 2, hidden: 32, dropout: 0.0}
data:
  class_path: lifecycle.data.ImageClassificationDataModule
  init_args: {dataset: digits, batch_size: 64, views: 2, train_transforms: simclr}
"""


@pytest.mark.slow
def test_a_pretraining_run_killed_mid_epoch_resumes_from_its_checkpoint_to_the_same_backbone(
    tmp_path,
):
    from safetensors.torch import load_file

    from tests.training.killer import run_killed, run_subprocess, write_kill_config

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(PRETRAIN_RECIPE)
    # 21 steps an epoch: killed in the second, 2 steps after its checkpoint
    kill = write_kill_config(tmp_path / "kill.yaml", step=26, every_n_train_steps=3)
    base = ["fit", "--config", recipe, "--trainer.default_root_dir", tmp_path]
    assert run_subprocess([*base, "--run_name", "whole"]).returncode == 0
    run_killed(base, kill)  # SIGKILL: stronger than the returncode != 0 it checked
    assert not (tmp_path / "killed" / "version_0" / "pretrained").exists()
    resumed = run_subprocess([*base, "--run_name", "killed", "--ckpt_path", "last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr + resumed.stdout
    whole, again = (
        load_file(tmp_path / name / "version_0" / "pretrained" / "backbone.safetensors")
        for name in ("whole", "killed")
    )
    assert all(torch.equal(whole[k], again[k]) for k in whole)


DDP_RECIPE = """
seed_everything: 3
trainer:
  max_steps: 6
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
  limit_val_batches: 0
  log_every_n_steps: 1
model:
  class_path: lifecycle.stages.ContrastivePretrainingModule
  init_args:
    projection_layers: 1   # no BatchNorm: its statistics are per process
    temperature: 0.5
    backbone:
      class_path: lifecycle.models.MLP
      init_args: {in_features: 64, hidden: [32]}
    optimizer:
      class_path: torch.optim.SGD
      init_args: {lr: 0.5}
data:
  class_path: lifecycle.data.ImageClassificationDataModule
  init_args: {dataset: digits, views: 2, train_transforms: simclr}
"""


@pytest.mark.slow
def test_under_ddp_each_view_is_contrasted_with_every_process_images_as_on_one_device(tmp_path):
    """2 processes x 32 images with gathered negatives take the steps of one device x 64."""
    import csv
    import os
    import subprocess

    from tests.conftest import LIFECYCLE, REPO

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(DDP_RECIPE)

    def losses(name, *extra):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [LIFECYCLE, "fit", "--config", str(recipe), "--trainer.default_root_dir", str(tmp_path),
             "--run_name", name, *extra], capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = csv.DictReader(open(tmp_path / name / "version_0" / "metrics.csv"))
        return [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]

    one = losses("one", "--data.init_args.batch_size", "64", "--trainer.devices", "1")
    ddp = losses("ddp", "--config", str(REPO / "recipes/strategies/ddp.yaml"),
                 "--data.init_args.batch_size", "32", "--trainer.devices", "2")  # fmt: skip
    assert len(one) == len(ddp) == 6
    assert ddp == pytest.approx(one, abs=1e-4)
    assert one[-1] < one[0]


def test_padded_evaluation_records_are_neither_anchors_nor_negatives():
    """A sharded evaluation loader pads each rank to the same number of steps; the padded copies
    must not change the validation loss or top-1 (they would be extra twins and negatives)."""
    import types

    model = ContrastivePretrainingModule(small_cnn(), temperature=0.2)
    object.__setattr__(model, "_trainer", types.SimpleNamespace(world_size=1))
    logged = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, (float(value), kw["batch_size"]))
    views = torch.randn(6, 2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        model._step({"views": views[:4]}, "val")
        alone = dict(logged)
        padding = torch.tensor([False] * 4 + [True] * 2)
        model._step({"views": torch.cat([views[:4], views[:2]]), "padding": padding}, "val")
    assert logged == alone and alone["val/loss"][1] == 4
