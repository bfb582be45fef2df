"""A callback for the fault-tolerance tests: every rank SIGKILLs itself at one step, as a lost
node or the out-of-memory killer would (no handler, no cleanup, no final checkpoint); and the
helpers the kill-and-resume tests share (the kill config, the launcher of ``lifecycle`` runs).

Each run is its own process, forked from a launcher process (``python -m tests.training.killer``,
one per test process, started on first use) that imported lifecycle's CLI once and never runs
anything itself: every run starts from the state of a fresh ``lifecycle`` process, without the
seconds of importing Lightning each time, and ends as one does (the interpreter shuts down,
exit handlers run; a SIGKILL ends it on the spot). A run on several ranks is one process per
rank, started together with the environment Lightning's launcher gives the ranks it starts
(``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``), as torchrun or
a cluster's scheduler starts them."""

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
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
# what runs import beyond the CLI (the stages, data, augmentation, plots), imported once by the
# launcher
PRELOAD = ("lifecycle.cli", "lifecycle.stages", "lifecycle.stages.classification",
           "lifecycle.stages.contrastive", "lifecycle.stages.language_model",
           "lifecycle.data", "lifecycle.data.images", "lifecycle.data.augment",
           "lifecycle.data.corpora", "lifecycle.data.tokenization", "lifecycle.models",
           "lifecycle.models.vision", "lifecycle.models.text", "lifecycle.artifacts",
           "lifecycle.evaluation.plots", "lifecycle.training", "lifecycle.training.strategies",
           "lifecycle.training.sharding", "tests.training.killer")  # fmt: skip


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


@dataclass
class Run:
    """How one process of a ``lifecycle`` run ended (``-N``: killed by signal N) and what it
    printed."""

    returncode: int
    stdout: str
    stderr: str


class Launcher:
    """The launcher process (see the module docstring), driven over its stdin and stdout: one
    JSON line per launch (a list of runs, forked together), answered by one line (their exit
    statuses, once every one has ended)."""

    def __init__(self):
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.training.killer"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )  # fmt: skip
        self.lock = threading.Lock()

    def launch(self, runs: list[dict], timeout: float) -> list[int]:
        with self.lock:
            self.proc.stdin.write(json.dumps({"runs": runs, "timeout": timeout}) + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the launcher exited with {self.proc.wait()}")
        codes = json.loads(answer)
        if "timeout" in codes:
            raise subprocess.TimeoutExpired(runs[0]["args"], timeout)
        return codes

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


_launcher: Launcher | None = None


def launcher() -> Launcher:
    """This process's launcher, started on first use (it imports for some seconds)."""
    global _launcher
    if _launcher is None or _launcher.proc.poll() is not None:
        _launcher = Launcher()
        atexit.register(_launcher.close)
    return _launcher


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list, ranks: int = 1, timeout: float = 600) -> list[Run]:
    """``lifecycle ARGS`` from the repository (``tests.training.killer`` importable), one new
    process per rank (``ranks`` > 1: a distributed run, ARGS must ask for as many devices), its
    output captured; the runs of every rank, once all have ended."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
    if ranks > 1:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), NODE_RANK="0",
                   WORLD_SIZE=str(ranks))  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        runs = [
            {"args": [str(a) for a in args], "cwd": str(REPO),
             "env": {**env, "LOCAL_RANK": str(rank)} if ranks > 1 else env,
             "stdout": f"{out}/{rank}.out", "stderr": f"{out}/{rank}.err"}
            for rank in range(ranks)
        ]  # fmt: skip
        codes = launcher().launch(runs, timeout)
        return [
            Run(code, Path(run["stdout"]).read_text(), Path(run["stderr"]).read_text())
            for code, run in zip(codes, runs, strict=True)
        ]


def run_subprocess(args: list, timeout: float = 600) -> Run:
    """``lifecycle ARGS`` in a new process (see :func:`launch`)."""
    return launch(args, 1, timeout)[0]


def run_killed(
    args: list, kill_config: Path, run_name: str = "killed", ranks: int = 1
) -> list[Run]:
    """``lifecycle ARGS --config KILL_CONFIG --run_name RUN_NAME`` in a new process per rank,
    each checked to have ended by :class:`KillAt`'s SIGKILL (not by a crash, nor by reaching
    its end)."""
    runs = launch([*args, "--config", kill_config, "--run_name", run_name], ranks)
    for run in runs:
        assert run.returncode == -signal.SIGKILL, (run.returncode, run.stderr[-3000:])
    return runs


# ----------------------------------------------------------------- the launcher process
def serve() -> dict | None:
    """Import what runs import, then fork the runs of each launch asked for on stdin and
    answer their exit statuses on stdout; in a forked run, return that run (to be run by the
    caller, outside this loop), and None at the end of stdin."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    while line := sys.stdin.readline():
        request = json.loads(line)
        pids = []
        for run in request["runs"]:
            pid = os.fork()
            if pid == 0:
                return run
            pids.append(pid)
        codes: dict[int, int] = {}
        deadline = time.monotonic() + request["timeout"]
        while len(codes) < len(pids) and time.monotonic() < deadline:
            for pid in set(pids) - set(codes):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        if len(codes) < len(pids):
            for pid in set(pids) - set(codes):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            answer = {"timeout": request["timeout"]}
        else:
            answer = [codes[pid] for pid in pids]
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return None


def become(run: dict) -> None:
    """Make this forked process the run's: its output files, working directory, environment
    and command line (stdin: nothing)."""
    sys.stdout.flush()
    for fd, path in ((0, os.devnull), (1, run["stdout"]), (2, run["stderr"])):
        opened = os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(run["cwd"])
    os.environ.clear()
    os.environ.update(run["env"])
    sys.argv = [LIFECYCLE, *run["args"]]


if __name__ == "__main__":
    forked = serve()
    if forked is not None:  # this process is a run: the `lifecycle` console script's body
        become(forked)
        from lifecycle.cli import main

        sys.exit(main())
