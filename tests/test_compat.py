"""The private torch names of ``lifecycle/compat.py`` still exist and still do what the toolkit
relies on (checked on torch 2.13.0): an upgrade that renames one fails here."""

import os
import sys

import pytest
import torch
import torch.distributed as dist

from lifecycle.compat import FSDP_COMMON, release_process_group_references


def gloo_threads() -> int:
    tasks = "/proc/self/task"
    names = [open(f"{tasks}/{t}/comm").read().strip() for t in os.listdir(tasks)]
    return sum(name == "pt_gloo_runloop" for name in names)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_destroyed_process_groups_held_by_a_mesh_and_fsdp2_are_freed_with_their_threads():
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    before = gloo_threads()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("data_parallel",))
        assert list(mesh._pg_registry) == ["0"]  # the world group
        model = fully_shard(torch.nn.Linear(4, 2), mesh=mesh)
        model(torch.randn(3, 4)).sum().backward()
        assert FSDP_COMMON in sys.modules
    finally:
        dist.destroy_process_group()
    # destroyed, yet alive: the mesh and the FSDP2 unit still hold the groups
    assert gloo_threads() > before
    assert release_process_group_references() >= 2  # the mesh's, and FSDP2's mesh info's
    assert gloo_threads() == before  # freed: their destructors joined the threads
    assert mesh._pg_registry == {}
    assert release_process_group_references() == 0


class _Recorder:
    """A LightningModule that trains on index batches, records them, and sizes its schedule
    from ``trainer.estimated_stepping_batches`` (what triggers Lightning#20550)."""

    @staticmethod
    def build(seen: list[list[int]], save_at: int | None = None, path=None):
        import lightning as L

        class Module(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = torch.nn.Linear(1, 1)

            def training_step(self, batch, batch_idx):
                seen.append(batch[0].tolist())
                return self.layer(batch[0].float()[:, None]).sum()

            def on_train_batch_end(self, outputs, batch, batch_idx):
                if self.global_step == save_at:
                    self.trainer.save_checkpoint(path)

            def configure_optimizers(self):
                opt = torch.optim.SGD(self.parameters(), lr=0.1)
                steps = self.trainer.estimated_stepping_batches
                return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.OneCycleLR(
                    opt, max_lr=0.1, total_steps=steps)}  # fmt: skip

        return Module()


def test_lightning_still_leaves_loader_states_pending_and_the_compat_function_loads_them(tmp_path):
    """Lightning#20550, checked on lightning 2.6.6: when this test fails because the function
    returned False, Lightning loads the states itself: drop the workaround."""
    import lightning as L
    from torch.utils.data import TensorDataset

    from lifecycle.compat import load_pending_train_loader_states
    from lifecycle.data.loading import make_loader

    calls = []

    class Watch(L.Callback):
        def on_train_start(self, trainer, pl_module):
            calls.append(load_pending_train_loader_states(trainer))

    def fit(seen, ckpt_path=None, save_at=None):
        loader = make_loader(
            TensorDataset(torch.arange(40)), 4, shuffle=True, num_workers=0, seed=1
        )
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, callbacks=[Watch()],
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
        module = _Recorder.build(seen, save_at, tmp_path / "mid.ckpt")
        trainer.fit(module, loader, ckpt_path=ckpt_path, weights_only=False)

    whole: list[list[int]] = []
    fit(whole, save_at=3)
    resumed: list[list[int]] = []
    fit(resumed, ckpt_path=tmp_path / "mid.ckpt")
    assert calls == [False, True]  # a fresh run has nothing pending; the resumed one had
    assert resumed == whole[3:]  # and it went on with the 4th batch of the epoch


def test_optuna_trial_id_rebuilds_the_same_trial_from_its_storage():
    optuna = pytest.importorskip("optuna")
    from lifecycle.compat import optuna_trial_id

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    asked = study.ask()
    asked.suggest_float("x", 0, 1)
    again = optuna.trial.Trial(study, optuna_trial_id(asked))  # as another process rebuilds it
    again.set_user_attr("seen", True)
    assert optuna_trial_id(asked) != optuna_trial_id(study.trials[0])
    assert again.params == asked.params  # the same trial, not a new one
    assert study.trials[1].user_attrs == {"seen": True} and study.trials[1].number == asked.number
