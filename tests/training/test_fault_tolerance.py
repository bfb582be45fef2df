"""Fault tolerance: random states and DataLoader position in checkpoints, atomic writes, and a
run killed with SIGKILL that resumes to the very metrics of an uninterrupted one."""

import json
import random

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from lifecycle.data.loading import make_loader
from lifecycle.training.fault_tolerance import (
    ResumableCheckpoint,
    random_states,
    set_random_states,
)
from tests.conftest import REPO
from tests.training.killer import launch, run_killed, run_subprocess, write_kill_config


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.save({"states": random_states()}, tmp_path / "s.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    set_random_states(torch.load(tmp_path / "s.pt", weights_only=True)["states"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def dataset(n=50):
    return TensorDataset(torch.arange(n))


def test_a_restored_loader_continues_the_epoch_where_it_stopped():
    loader = make_loader(dataset(), batch_size=4, shuffle=True, num_workers=0, seed=3)
    loader.sampler.set_epoch(2)
    full = [b[0].tolist() for b in loader]
    partial = iter(loader)
    seen = [next(partial)[0].tolist() for _ in range(5)]
    state = loader.state_dict()
    assert state == {"batches_done": 5} and seen == full[:5]
    resumed = make_loader(dataset(), batch_size=4, shuffle=True, num_workers=0, seed=3)
    resumed.sampler.set_epoch(2)
    resumed.load_state_dict(state)
    assert [b[0].tolist() for b in resumed] == full[5:]
    # the epoch after continues whole; an end-of-epoch state skips nothing
    assert len(list(resumed)) == len(full)
    resumed.load_state_dict({"batches_done": len(full)})
    assert len(list(resumed)) == len(full)
    # the order depends on (seed, epoch) alone and iterating leaves the global RNG alone
    before = torch.get_rng_state()
    other = make_loader(dataset(), batch_size=4, shuffle=True, num_workers=0, seed=3)
    other.sampler.set_epoch(2)
    assert [b[0].tolist() for b in other] == full
    assert torch.equal(before, torch.get_rng_state())


class Linear(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2000, 100)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_checkpoint_write_that_dies_midway_leaves_the_previous_checkpoint_whole(
    tmp_path, monkeypatch
):
    from fsspec.implementations.local import LocalFileOpener

    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(Linear(), torch.utils.data.DataLoader(TensorDataset(torch.randn(4, 2000))))
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    saved = path.read_bytes()
    trainer.lightning_module.layer.weight.data += 1
    real_write = LocalFileOpener.write

    def dying_write(self, data):
        real_write(self, bytes(data)[: len(data) // 2])
        raise OSError("killed while writing")

    monkeypatch.setattr(LocalFileOpener, "write", dying_write)
    with pytest.raises(OSError, match="killed while writing"):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == saved  # the old checkpoint, whole
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == 1


def test_resumable_checkpoint_needs_an_interval():
    with pytest.raises(ValueError, match="`every_n_train_steps` or `every_minutes`"):
        ResumableCheckpoint(every_n_train_steps=None, every_minutes=None)


RECIPE = """
seed_everything: 7
test_after_fit: true
trainer:
  max_epochs: 3
  accelerator: cpu
  devices: 1
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lifecycle.training.ResumableCheckpoint
      init_args: {every_n_train_steps: 3}
model:
  class_path: lifecycle.stages.ClassificationModule
  init_args:
    num_classes: 10
    backbone:
      class_path: lifecycle.models.SmallCNN
      init_args: {in_channels: 1, channels: [16, 32], convs_per_block: 1, pool_size: 2, hidden: 64, dropout: 0.3}
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 0.003}
    scheduler:
      class_path: torch.optim.lr_scheduler.OneCycleLR
      init_args: {max_lr: 0.003}
data:
  class_path: lifecycle.data.ImageClassificationDataModule
  init_args: {dataset: digits, batch_size: 32, train_subset: 384, train_transforms: light}
"""
STEPS_PER_EPOCH = 12  # 384 training images in batches of 32


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_final_metrics(tmp_path):
    # 12 steps an epoch; killed by SIGKILL at step 20 of the second epoch, 2 steps after its
    # checkpoint at 18. Each run is a new process, as a user's would be (tests.training.killer)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    base = ["fit", "--config", recipe, "--trainer.default_root_dir", tmp_path]
    whole_run = run_subprocess([*base, "--run_name", "whole"])
    assert whole_run.returncode == 0, whole_run.stderr[-3000:]
    whole_last = tmp_path / "whole" / "version_0" / "checkpoints" / "last.ckpt"
    per_epoch = torch.load(whole_last, weights_only=True)["global_step"] // 3
    assert per_epoch == STEPS_PER_EPOCH
    run_killed(base, write_kill_config(tmp_path / "kill.yaml", step=20, every_n_train_steps=3))
    ckpts = tmp_path / "killed" / "version_0" / "checkpoints"
    step = torch.load(ckpts / "last-step.ckpt", weights_only=True)["global_step"]
    assert per_epoch < step < 2 * per_epoch and step % per_epoch != 0  # mid-epoch, 2nd epoch
    assert not (tmp_path / "killed" / "version_0" / "metrics.json").exists()
    resumed = run_subprocess([*base, "--run_name", "killed", "--ckpt_path", "last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stderr + resumed.stdout
    assert not (tmp_path / "killed" / "version_1").exists()  # resumed in its own folder
    whole = json.loads((tmp_path / "whole" / "version_0" / "metrics.json").read_text())
    killed = json.loads((tmp_path / "killed" / "version_0" / "metrics.json").read_text())
    assert whole == killed, (whole, killed)
    # the log kept what the killed run had logged up to its checkpoint, and went on after it
    import csv

    rows = list(csv.DictReader(open(tmp_path / "killed" / "version_0" / "metrics.csv")))
    trained = {r["epoch"] for r in rows if r.get("train/loss") or r.get("val/loss")}
    assert trained == {"0", "1", "2"}
    final = [torch.load(tmp_path / name / "version_0" / "checkpoints" / "last.ckpt",
                        weights_only=True)["state_dict"] for name in ("whole", "killed")]  # fmt: skip
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])


@pytest.mark.slow
def test_an_fsdp2_run_killed_mid_epoch_resumes_exactly_from_its_sharded_checkpoint(tmp_path):
    # 2 CPU ranks (one process each, started together), 6 steps an epoch each, 2 epochs;
    # BatchNorm statistics kept equal across ranks; checkpoints are folders. Killed at step 10
    # of the second epoch, 1 step after its checkpoint
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.replace("deterministic: true", "deterministic: false"))
    kill = write_kill_config(tmp_path / "kill.yaml", 10, 3, mark_dir=tmp_path / "killed")
    base = ["fit", "--config", recipe, "--config", REPO / "recipes/strategies/fsdp2.yaml",
            "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_epochs", "2",
            "--trainer.default_root_dir", tmp_path]  # fmt: skip
    whole_run = launch([*base, "--run_name", "whole"], ranks=2)
    assert [r.returncode for r in whole_run] == [0, 0], whole_run[0].stderr[-3000:]
    # the kill, not a crash: SIGKILL ended both ranks, and each marked its kill at step 10
    run_killed(base, kill, ranks=2)
    marks = [tmp_path / "killed" / f"killed-at-step-rank{rank}.txt" for rank in (0, 1)]
    assert [m.read_text() if m.exists() else None for m in marks] == ["10", "10"]
    checkpoint = tmp_path / "killed" / "version_0" / "checkpoints" / "last-step.ckpt"
    assert checkpoint.is_dir()  # one shard per rank
    assert torch.load(checkpoint / "meta.pt", weights_only=True)["global_step"] == 9
    resumed = launch([*base, "--run_name", "killed", "--ckpt_path", "last"], ranks=2)
    assert [r.returncode for r in resumed] == [0, 0], resumed[0].stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed[0].stderr + resumed[0].stdout
    whole = json.loads((tmp_path / "whole" / "version_0" / "metrics.json").read_text())
    again = json.loads((tmp_path / "killed" / "version_0" / "metrics.json").read_text())
    assert whole["metrics"] == again["metrics"]
