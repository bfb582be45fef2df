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
