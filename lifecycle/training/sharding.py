"""FSDP2 sharding for ``lightning.pytorch.strategies.ModelParallelStrategy``.

Lightning's ``ModelParallelStrategy`` (FSDP2 through ``torch.distributed.fsdp.fully_shard``)
leaves the sharding to the LightningModule's ``configure_model`` hook. :func:`shard_module`
is what the toolkit's stages call there: each block of the module becomes its own FSDP unit
(its parameters are gathered just before it runs and freed after), then each root holds what is
left. It runs on CPU (gloo) and GPU (NCCL) alike, and partly frozen modules (fine-tuning) work:
FSDP2 shards parameter by parameter, so frozen and trainable ones may share a unit.

Which modules are blocks:

1. the module's own ``fsdp_units()`` method, when it has one (a user's backbone decides);
2. else, for ``transformers`` models, the classes the model lists in ``_no_split_modules``
   (``BertLayer``, ``GPT2Block``, ...), as ``accelerate`` and Lightning's FSDP1 auto-wrap do;
3. else every module that holds parameters of its own (convolutions, linear layers, norms,
   embeddings): fine-grained, so the largest unit is one layer.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def shard_units(module: nn.Module) -> list[nn.Module]:
    """The blocks of ``module`` that become FSDP units (see the module docstring for the rule)."""
    own = getattr(module, "fsdp_units", None)
    if callable(own):
        return list(own())
    no_split: set[str] = set()
    for m in module.modules():
        no_split.update(getattr(m, "_no_split_modules", None) or [])
    if no_split:
        return [m for m in module.modules() if type(m).__name__ in no_split]
    return [
        m
        for m in module.modules()
        if m is not module and next(m.parameters(recurse=False), None) is not None
    ]


def is_sharded(module: nn.Module) -> bool:
    """Whether ``fully_shard`` was applied to ``module`` already."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def shard_module(
    roots: Iterable[nn.Module], mesh, owner: nn.Module | None = None, **fsdp_kwargs
) -> None:
    """Apply FSDP2 to each of ``roots``: its blocks (:func:`shard_units`) first, then the root.

    Args:
        roots: the modules to shard, e.g. a stage's backbone and head. Already sharded ones are
            skipped, so a ``configure_model`` hook that calls this stays idempotent (Lightning
            calls the hook again for ``test`` after ``fit``).
        mesh: the data-parallel device mesh (``self.device_mesh["data_parallel"]`` in a
            LightningModule under ``ModelParallelStrategy``).
        owner: the LightningModule; checked to hold no parameter outside ``roots`` (FSDP2 only
            synchronizes the gradients of sharded parameters, so one left out would silently
            drift apart between ranks).
        fsdp_kwargs: passed to ``fully_shard`` (e.g. ``mp_policy``, ``reshard_after_forward``).
    """
    from torch.distributed.fsdp import fully_shard

    roots = list(roots)
    for root in roots:
        if is_sharded(root):
            continue
        for unit in shard_units(root):
            if not is_sharded(unit):
                fully_shard(unit, mesh=mesh, **fsdp_kwargs)
        fully_shard(root, mesh=mesh, **fsdp_kwargs)
    if owner is not None:
        covered = {id(p) for root in roots for p in root.parameters()}
        outside = [name for name, p in owner.named_parameters() if id(p) not in covered]
        if outside:
            raise ValueError(
                f"{type(owner).__name__} holds parameters outside the sharded modules: "
                f"{outside[:5]}. Under ModelParallelStrategy (FSDP2) their gradients would not "
                "be synchronized between ranks. Fix: move them into the backbone or the head, "
                "or shard their module too in `configure_model`."
            )


def data_parallel_mesh(module):
    """The mesh a LightningModule's parameters are sharded over under ``ModelParallelStrategy``
    (its ``data_parallel`` dimension when named), or ``None`` under other strategies."""
    mesh = module.device_mesh
    if mesh is not None and "data_parallel" in (mesh.mesh_dim_names or ()):
        mesh = mesh["data_parallel"]
    return mesh
