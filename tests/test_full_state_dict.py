"""``lifecycle.artifacts.full_state_dict``: torch's ``get_model_state_dict`` gathers FSDP2 shards
into whole CPU tensors, and a plain module's dict is its ``state_dict``."""

import subprocess
import sys
import textwrap

import torch
from torch import nn

from lifecycle.artifacts import full_state_dict


def test_a_plain_modules_full_state_dict_is_its_state_dict_on_the_cpu():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    state = full_state_dict(module)
    expected = module.state_dict()
    assert list(state) == list(expected)  # buffers (running stats, num_batches_tracked) too
    assert all(torch.equal(state[k], expected[k]) and state[k].device.type == "cpu" for k in state)


def test_an_fsdp2_sharded_module_is_gathered_into_whole_tensors():
    code = textwrap.dedent(
        """
        import os, torch, torch.distributed as dist
        from torch import nn
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import DTensor
        from lifecycle.artifacts import full_state_dict
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29531", RANK="0", WORLD_SIZE="1")
        dist.init_process_group("gloo")
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
        expected = {k: v.clone() for k, v in module.state_dict().items()}
        mesh = init_device_mesh("cpu", (1,))
        fully_shard(module[0], mesh=mesh)
        fully_shard(module, mesh=mesh)
        assert isinstance(module.state_dict()["0.weight"], DTensor)
        state = full_state_dict(module)
        assert list(state) == list(expected), list(state)
        assert all(type(v) is torch.Tensor and torch.equal(v, expected[k]) for k, v in state.items())
        dist.destroy_process_group()
        print("gathered", len(state))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "gathered 4" in out.stdout, out.stdout + out.stderr[-3000:]
