"""Training machinery shared by every stage: optimizers and schedules, gradient clipping under
every strategy, FSDP2 sharding, gradient health, fault tolerance."""

from lifecycle.training.clipping import ShardedClipping, clip_gradients, total_grad_norm
from lifecycle.training.fault_tolerance import ResumableCheckpoint
from lifecycle.training.health import GradientHealth, NonFiniteGradientError
from lifecycle.training.sharding import shard_module, shard_units

__all__ = [
    "GradientHealth",
    "NonFiniteGradientError",
    "ResumableCheckpoint",
    "ShardedClipping",
    "clip_gradients",
    "shard_module",
    "shard_units",
    "total_grad_norm",
]
