"""A callback for the fault-tolerance tests: every rank SIGKILLs itself at one step, as a lost
node or the out-of-memory killer would (no handler, no cleanup, no final checkpoint)."""

import os
import signal

import lightning as L


class KillAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
