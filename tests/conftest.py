import contextlib
import io
import logging
import os
import random
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# `import lifecycle` leaves the environment alone (the CLI entry point sets these): the tests
# never reach the network, nor check for an albumentations update
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
logging.getLogger("lightning.fabric").setLevel(logging.WARNING)

REPO = Path(__file__).resolve().parents[1]
LIFECYCLE = str(Path(sys.executable).with_name("lifecycle"))


@pytest.fixture
def write_images(tmp_path):
    """Write a small ImageFolder: {class: [array, ...]} -> tmp_path/images/<class>/<i>.png."""
    from PIL import Image

    def write(classes: dict[str, list[np.ndarray]], root: Path | None = None) -> Path:
        root = root or tmp_path / "images"
        for name, images in classes.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            for i, array in enumerate(images):
                Image.fromarray(array).save(root / name / f"{i}.png")
        return root

    return write


def quiet_trainer(tmp_path, **kwargs):
    import lightning as L

    defaults = dict(
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**defaults, **kwargs})


@contextlib.contextmanager
def isolated_process_state():
    """Give back, on exit, the process-wide state an in-process ``lifecycle`` run changes: the
    working directory, ``sys.argv``, ``os.environ``, warning filters, logging levels and
    handlers, signal handlers, the random generators' states, torch's thread count and
    determinism settings, and a process group (the FSDP2 preset starts one even on one device:
    it is destroyed and freed, so no gloo thread outlives the run)."""
    import numpy
    import torch

    cwd, argv, environ = os.getcwd(), list(sys.argv), dict(os.environ)
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    logging_state = [(lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers]
    logging_disable = logging.root.manager.disable
    signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    rng = (random.getstate(), numpy.random.get_state(), torch.random.get_rng_state())
    torch_state = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_float32_matmul_precision(),
        torch.get_default_dtype(),
    )
    try:
        with warnings.catch_warnings():
            yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            from lifecycle.compat import release_process_group_references

            dist.destroy_process_group()
            release_process_group_references()
        os.chdir(cwd)
        sys.argv[:] = argv
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)
        for lg, level, handlers, propagate, disabled in logging_state:
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, disabled
        logging.disable(logging_disable)
        for number, handler in signals.items():
            signal.signal(number, handler)
        random.setstate(rng[0])
        numpy.random.set_state(rng[1])
        torch.random.set_rng_state(rng[2])
        threads, deterministic, warn_only, matmul, dtype = torch_state
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_float32_matmul_precision(matmul)
        torch.set_default_dtype(dtype)


@dataclass
class Run:
    """What a ``lifecycle`` command run in-process gave: its exit status and its output."""

    returncode: int
    stdout: str
    stderr: str


def run_lifecycle(args: list[str], cwd: Path = REPO) -> Run:
    """``lifecycle ARGS`` through :func:`lifecycle.cli.main` in this process, from ``cwd``,
    as a subprocess would run it: the exit status (``SystemExit``'s code; an exception that
    escapes ``main`` propagates, as a traceback would end the command) and what it printed to
    stdout and stderr. The process-wide state the run changes is restored afterwards
    (:func:`isolated_process_state`)."""
    from lifecycle.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    returncode = 0
    with isolated_process_state():
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main([str(a) for a in args])
            except SystemExit as exit_:
                code = exit_.code
                returncode = code if isinstance(code, int) else (0 if code is None else 1)
                if isinstance(code, str):
                    stderr.write(code + "\n")
    return Run(returncode, stdout.getvalue(), stderr.getvalue())
