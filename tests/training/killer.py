"""A callback for the fault-tolerance tests: every rank SIGKILLs itself at one step, as a lost
node or the out-of-memory killer would (no handler, no cleanup, no final checkpoint)."""

import os
import signal
from pathlib import Path

import lightning as L


class KillAt(L.Callback):
    """SIGKILL this process when ``trainer.global_step`` reaches ``step``.

    Args:
        step: the global step at which each rank kills itself.
        mark_dir: where each rank first writes ``killed-at-step-rank<N>.txt`` (holding the
            step), so that a test can tell this kill from a crash that happened to end the run.
    """

    def __init__(self, step: int, mark_dir: str | None = None):
        self.step = step
        self.mark_dir = mark_dir

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            if self.mark_dir is not None:
                mark = Path(self.mark_dir) / f"killed-at-step-rank{trainer.global_rank}.txt"
                mark.parent.mkdir(parents=True, exist_ok=True)
                with open(mark, "w") as f:
                    f.write(str(self.step))
                    f.flush()
                    os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
