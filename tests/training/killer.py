"""A callback for the fault-tolerance tests: every rank SIGKILLs itself at one step, as a lost
node or the out-of-memory killer would (no handler, no cleanup, no final checkpoint); and the
helpers the kill-and-resume tests share (the kill config, the killed subprocess)."""

import os
import signal
import subprocess
import sys
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


# ----------------------------------------------------------------- helpers for the kill tests
REPO = Path(__file__).resolve().parents[2]
LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))


def write_kill_config(
    path: Path, step: int, every_n_train_steps: int, mark_dir: Path | None = None
) -> Path:
    """Write a config to give after a recipe's: ``trainer.callbacks`` becomes a
    ``ResumableCheckpoint(every_n_train_steps)`` (a later ``--config`` replaces the list, so
    the recipe's must be the same) and :class:`KillAt` ``(step, mark_dir)``."""
    mark = f", mark_dir: {mark_dir}" if mark_dir is not None else ""
    path.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: lifecycle.training.ResumableCheckpoint\n"
        f"      init_args: {{every_n_train_steps: {every_n_train_steps}}}\n"
        "    - class_path: tests.training.killer.KillAt\n"
        f"      init_args: {{step: {step}{mark}}}\n"
    )
    return path


def run_subprocess(args: list, timeout: float = 600) -> subprocess.CompletedProcess:
    """``lifecycle ARGS`` in a new process from the repository (``tests.training.killer``
    importable), its output captured."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([LIFECYCLE, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)  # fmt: skip


def run_killed(
    args: list, kill_config: Path, run_name: str = "killed"
) -> subprocess.CompletedProcess:
    """``lifecycle ARGS --config KILL_CONFIG --run_name RUN_NAME`` in a new process, checked
    to have ended by :class:`KillAt`'s SIGKILL (not by a crash, nor by reaching its end)."""
    proc = run_subprocess([*args, "--config", kill_config, "--run_name", run_name])
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
    return proc
