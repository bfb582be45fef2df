"""Lightning's strategies with the toolkit's fixes; the presets in ``recipes/strategies/`` use them.

- :class:`DDPStrategy`: Lightning's, plus a clean exit on CPU. With the gloo backend Lightning
  never destroys the process group (it registers ``destroy_process_group`` at exit for NCCL
  only). A gloo worker thread then sometimes releases its last reference to a Python object
  after the interpreter began shutting down; Python ends that thread with ``pthread_exit``,
  whose forced unwind meets a ``noexcept`` destructor: ``terminate called without an active
  exception``, SIGABRT, exit code 134, about one run in 10 to 20 on 2 cores (core dumps show
  ``ProcessGroupGloo::runLoop`` -> ``~AsyncWork`` -> ``gil_scoped_acquire`` -> ``pthread_exit``
  -> ``std::terminate``; pytorch#190489). Destroying the group at exit, before the interpreter
  shuts down, joins those threads first. No barrier: destroying a gloo group is not a collective,
  so a rank that failed cannot make the others hang.
- :class:`FSDP2Strategy`: ``ModelParallelStrategy`` set up for fully sharded data parallelism
  (all devices shard, no tensor parallelism) with the same clean exit, and rank 0's
  normalization statistics (BatchNorm running mean and variance) given to every rank after each
  training step, as DDP does; the toolkit's stages shard themselves in ``configure_model``
  (:mod:`lifecycle.training.sharding`). Runs on CPU. Destroying the group is not enough here:
  ``destroy_process_group`` only forgets the groups in ``torch.distributed``'s tables, and a gloo
  group's threads are joined by its destructor, when its last reference goes. The device mesh
  (its ``_pg_registry``) and every FSDP2 unit (its mesh info) keep references as long as the
  model lives, so the groups (the world group and the mesh's sub-groups) and their threads
  outlived the exit handler and the same abort hit about one FSDP2 run in 20. At exit the
  toolkit also drops those references (:func:`lifecycle.compat.release_process_group_references`)
  so that the groups are freed, and their threads joined, before the interpreter shuts down
  (``tests/training/test_distributed.py`` checks that no gloo thread is left at exit).
- :class:`FSDPStrategy`: Lightning's FSDP1 (GPU only) with ``auto_wrap_policy: blocks`` by
  default: each block class of the model (``BertLayer`` and the like, see
  :func:`~lifecycle.training.sharding.shard_units`) becomes an FSDP unit.
"""

from __future__ import annotations

import atexit
from typing import Any, Literal

import torch
from lightning.pytorch.strategies import DDPStrategy as _DDPStrategy
from lightning.pytorch.strategies import FSDPStrategy as _FSDPStrategy
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

_registered = False


def destroy_process_group_at_exit() -> None:
    """Destroy the process groups when Python exits (once per process), for backends where
    Lightning does not (all but NCCL), and free them (see the module docstring)."""
    global _registered
    import torch.distributed as dist

    if _registered or not dist.is_available() or not dist.is_initialized():
        return
    if dist.get_backend() == "nccl":
        return  # Lightning registers it for NCCL itself
    atexit.register(_destroy_and_free_process_groups)
    _registered = True


def _destroy_and_free_process_groups() -> None:
    import torch.distributed as dist

    from lifecycle.compat import release_process_group_references

    if dist.is_initialized():
        dist.destroy_process_group()
    # only now: dropping a group's last reference joins its threads, with the GIL released
    release_process_group_references()


class DDPStrategy(_DDPStrategy):
    """Lightning's ``DDPStrategy`` that exits cleanly on CPU (see the module docstring).
    Same arguments as ``lightning.pytorch.strategies.DDPStrategy``."""

    def setup_distributed(self) -> None:
        super().setup_distributed()
        destroy_process_group_at_exit()


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2: every device holds a shard of the parameters, gradients and optimizer state.

    Args:
        data_parallel_size: devices that shard the model; ``auto`` is all of them (every
            device on every node).
        tensor_parallel_size: devices per tensor-parallel group (1: none).
        save_distributed_checkpoint: each rank writes its shard (a checkpoint folder); ``False``
            gathers one file on rank 0.
        kwargs: the other arguments of ``ModelParallelStrategy`` (``process_group_backend``,
            ``timeout``).
    """

    def __init__(
        self,
        data_parallel_size: int | Literal["auto"] = "auto",
        tensor_parallel_size: int = 1,
        save_distributed_checkpoint: bool = True,
        **kwargs: Any,
    ):
        super().__init__(
            data_parallel_size=data_parallel_size,
            tensor_parallel_size=tensor_parallel_size,
            save_distributed_checkpoint=save_distributed_checkpoint,
            **kwargs,
        )

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
        destroy_process_group_at_exit()

    def training_step(self, *args: Any, **kwargs: Any):
        output = super().training_step(*args, **kwargs)
        self.broadcast_buffers()
        return output

    def broadcast_buffers(self) -> None:
        """Give every rank rank 0's normalization statistics (BatchNorm running mean, variance
        and batch count: :func:`normalization_statistics`) after each training step, as DDP
        does before each one (``broadcast_buffers=True``): FSDP2 shards parameters but leaves
        each rank its own buffers, so ranks would evaluate with different statistics, a
        checkpoint would hold one rank's, and a resumed run would not be exact. Other buffers
        are left alone: they may be each rank's own state, such as a distillation teacher's
        cached logits for the records this rank saw."""
        import torch.distributed as dist

        if self.world_size < 2 or not dist.is_initialized():
            return
        for buffer in normalization_statistics(self.lightning_module):
            dist.broadcast(buffer, src=0)


def normalization_statistics(module: nn.Module) -> list[torch.Tensor]:
    """The buffers of ``module``'s normalization layers that track running statistics (those
    with ``track_running_stats``: BatchNorm, SyncBatchNorm, InstanceNorm with
    ``track_running_stats=True``, and users' layers that follow the same convention), each
    once, sharded ones (DTensors) left out."""
    from torch.distributed.tensor import DTensor

    seen: set[int] = set()
    found = []
    for layer in module.modules():
        if not getattr(layer, "track_running_stats", False):
            continue
        for buffer in layer.buffers(recurse=False):
            if buffer is not None and id(buffer) not in seen and not isinstance(buffer, DTensor):
                seen.add(id(buffer))
                found.append(buffer)
    return found


class FSDPStrategy(_FSDPStrategy):
    """Lightning's ``FSDPStrategy`` (FSDP1, GPU only) wrapping the model's blocks.

    Args:
        auto_wrap_policy: ``blocks`` (default): an FSDP unit per block class of the model
            (:func:`~lifecycle.training.sharding.shard_units`: the model's own ``fsdp_units()``,
            a ``transformers`` model's ``_no_split_modules``, else each layer with parameters);
            or anything Lightning's ``FSDPStrategy`` takes (a set of classes, a policy), or
            ``None``.
        kwargs: Lightning's ``FSDPStrategy`` arguments (``sharding_strategy``,
            ``cpu_offload``, ``activation_checkpointing_policy``, ...).
    """

    def __init__(self, auto_wrap_policy: Any = "blocks", **kwargs: Any):
        self._wrap_blocks = auto_wrap_policy == "blocks"
        super().__init__(auto_wrap_policy=None if self._wrap_blocks else auto_wrap_policy, **kwargs)

    def _setup_model(self, model):
        if self._wrap_blocks and "auto_wrap_policy" not in self.kwargs:
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy

            from lifecycle.training.sharding import shard_units

            classes = {type(unit) for unit in shard_units(model)}
            if classes:
                self.kwargs["auto_wrap_policy"] = ModuleWrapPolicy(classes)
        return super()._setup_model(model)
