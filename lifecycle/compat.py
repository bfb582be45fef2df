"""The private names of torch and Lightning that the toolkit uses, each in one place, with the
version it was checked on; ``tests/test_compat.py`` checks that each still exists, so an upgrade
that renames one fails a test instead of silently undoing a fix.

- ``torch.distributed.device_mesh.DeviceMesh._pg_registry`` (torch 2.13.0): a dict of group name
  to ``ProcessGroup`` that every root mesh keeps (its submeshes register there too).
- ``torch.distributed.fsdp._fully_shard._fsdp_common.DataParallelMeshInfo`` (torch 2.13.0): the
  base of FSDP2's ``FSDPMeshInfo``/``DDPMeshInfo``/``HSDPMeshInfo``; each holds its mesh's
  process groups as attributes (``shard_process_group``, ``replicate_process_group``,
  ``reduce_scatter_process_group``).
"""

from __future__ import annotations

import gc
import sys

FSDP_COMMON = "torch.distributed.fsdp._fully_shard._fsdp_common"


def release_process_group_references() -> int:
    """Drop the references to process groups that torch's ``DeviceMesh`` and FSDP2 keep after
    ``torch.distributed.destroy_process_group()``, so that the groups are really freed.

    ``destroy_process_group`` only forgets the groups in ``torch.distributed``'s own tables; a
    gloo group's worker threads are joined by its destructor, which runs once the last reference
    goes. A device mesh (``_pg_registry``) and every FSDP2 unit (its mesh info) hold references
    for as long as the model lives, which under Lightning is until the interpreter finalizes:
    see :mod:`lifecycle.training.strategies` for the abort this causes. Call it only once the
    groups are destroyed: the meshes and sharded modules cannot communicate afterwards.

    Returns:
        How many references were dropped.
    """
    import torch.distributed as dist

    # none of their instances can exist unless the modules were imported: no import at exit
    mesh_module = sys.modules.get("torch.distributed.device_mesh")
    fsdp_module = sys.modules.get(FSDP_COMMON)
    DeviceMesh = getattr(mesh_module, "DeviceMesh", ())
    DataParallelMeshInfo = getattr(fsdp_module, "DataParallelMeshInfo", ())
    dropped = 0
    for obj in gc.get_objects():
        kind = type(obj)  # not isinstance: it asks lazy and deprecated objects for __class__
        if issubclass(kind, DeviceMesh):
            registry = obj.__dict__.get("_pg_registry")
            if registry:
                dropped += len(registry)
                registry.clear()
        elif issubclass(kind, DataParallelMeshInfo):
            for name, value in list(vars(obj).items()):
                if isinstance(value, dist.ProcessGroup):
                    setattr(obj, name, None)
                    dropped += 1
    return dropped
