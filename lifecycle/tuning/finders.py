"""``lifecycle tune lr`` and ``lifecycle tune batch-size``: a recipe's learning rate and batch
size, found on one device and written as a config to add (``--config <root>/lr.yaml``).

- **Learning rate**: Lightning's range test (:meth:`lightning.pytorch.tuner.Tuner.lr_find`) on the
  recipe's model and data: ``num_training`` steps from ``min_lr`` to ``max_lr``, the loss of each,
  and the rate where the loss falls fastest *per step of the log-spaced sweep* (``--rule log``,
  the default; fastai's "steep" point). Lightning's own ``suggestion()`` (``--rule lightning``)
  takes the gradient against the rate itself, which on a log-spaced sweep favours the low end
  of the descent: on the Fashion-MNIST recipe it suggested 8.3e-5 where the per-step rule gives
  1.1e-3 and a 16-trial sweep's best AdamW rate was 4.3e-3 (``benchmarks/tuning.py``). Both are
  in ``lr.json``. Writes ``lr_find.png`` (loss against rate, the
  suggestion marked), ``lr_find.json`` (every rate and loss) and ``lr.yaml``, which sets the
  optimizer's ``lr`` and, when the recipe's scheduler takes one, its ``max_lr`` (OneCycleLR's
  peak: what the range test was made to choose).
- **Batch size**: on a GPU the largest batch that fits (Lightning's
  :meth:`~lightning.pytorch.tuner.Tuner.scale_batch_size`, binary search on out-of-memory); on a
  CPU, where memory does not run out first, the batch with the most samples per second, measured
  over ``steps`` training steps (after ``warmup``) for powers of two from ``min_size`` to
  ``max_size``; the search stops once two sizes in a row are slower than the best. With
  ``--scale_lr linear`` (Goyal et al. 2017) or ``sqrt`` (Krizhevsky 2014, Hoffer et al. 2017) the
  learning rate moves with the batch: ``lr * (new / recipe's batch)`` or its square root.
  Writes ``batch_size.json``, ``batch_size.png`` (CPU: samples per second against batch size)
  and ``batch_size.yaml``.

**Several processes.** Both search on one device of one process: a recipe that asks for several
devices or nodes (``recipes/strategies/ddp.yaml``, FSDP) is searched on one, and its run then
reads the file on every rank, so every rank gets the same values (Lightning's batch-size finder
does not work under DDP: Lightning #20994). Started by a launcher (``torchrun``, ``srun``:
``WORLD_SIZE`` > 1), rank 0 searches with the launcher's variables hidden from Lightning and the
other ranks wait for its result file. A batch size is per device: under DDP the global batch is
it times the number of devices.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.errors import ConfigError
from lifecycle.pipeline.spec import lookup
from lifecycle.tuning.overrides import short_field, write_override_file

# the variables by which Lightning sees that a launcher started this process as one of several
LAUNCHER_VARIABLES = (
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
    "ROLE_WORLD_SIZE", "NODE_RANK", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID",
    "SLURM_LOCALID", "SLURM_JOB_ID", "SLURM_NODEID",
)  # fmt: skip
WAIT_SECONDS = 3600


@dataclass
class TuneCommands:
    """What the finders need of the ``lifecycle`` command, given by :mod:`lifecycle.cli`.

    Attributes:
        build: the recipe's CLI, model, DataModule and Trainer instantiated, nothing run.
        trainer_kwargs: the recipe's ``trainer`` section of that CLI as ``Trainer`` keyword
            arguments, without loggers, callbacks or checkpointing.
    """

    build: Callable[[list[str]], Any]
    trainer_kwargs: Callable[[Any], dict]


def launched_rank() -> tuple[int, int]:
    """``(rank, world size)`` when a launcher started this process, else ``(0, 1)``."""
    env = os.environ
    world = int(env.get("WORLD_SIZE") or env.get("SLURM_NTASKS") or 1)
    rank = int(env.get("RANK") or env.get("SLURM_PROCID") or 0)
    return rank, world


@contextlib.contextmanager
def one_process():
    """Hide the launcher's variables while a search runs on one device of rank 0."""
    saved = {k: os.environ.pop(k) for k in LAUNCHER_VARIABLES if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def wait_for(path: Path, since: float, seconds: float = WAIT_SECONDS) -> dict:
    """A rank other than 0: the result rank 0 writes to ``path`` (newer than ``since``)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if path.is_file() and path.stat().st_mtime >= since:
            with contextlib.suppress(ValueError):
                return json.loads(path.read_text())
        time.sleep(0.5)
    raise ConfigError(f"rank 0 wrote no {path} in {seconds:.0f} s; see rank 0's output.")


def _section(config: dict, *keys: str) -> dict:
    _, node = lookup(config, ".".join(keys))
    return node if isinstance(node, dict) else {}


def lr_fields(config: dict) -> dict[str, float | None]:
    """The recipe's learning-rate fields and values: the optimizer's ``lr`` and the
    scheduler's ``max_lr`` when it has one (``model.init_args.optimizer.init_args.lr``, ...)."""
    fields: dict[str, float | None] = {}
    for part, key in (("optimizer", "lr"), ("scheduler", "max_lr")):
        init_args = _section(config, "model", "init_args", part, "init_args")
        if key in init_args:
            fields[f"model.init_args.{part}.init_args.{key}"] = init_args[key]
    return fields


def single_device_kwargs(kwargs: dict, root: Path) -> dict:
    """The recipe's Trainer arguments for a search on one device: one device, one node, the
    default strategy, no logger, checkpoints or progress bar."""
    return {
        **kwargs,
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(root),
    }


def several_devices(kwargs: dict) -> str | None:
    """``"2 devices x 1 nodes"`` when Trainer arguments (or a config's ``trainer`` section) ask
    for more than one process, else None."""
    devices, nodes = kwargs.get("devices"), kwargs.get("num_nodes") or 1
    count = len(devices) if isinstance(devices, list | tuple) else devices
    if isinstance(count, str) and count.strip().lstrip("-").isdigit():
        count = int(count)  # the command line's `--trainer.devices=2` arrives as "2"
    if (isinstance(count, int) and count > 1) or count == -1 or int(nodes) > 1:
        return f"{count} devices x {nodes} nodes"
    return None


def write_result(root: Path, stem: str, result: dict, values: dict, header: list[str]) -> Path:
    """``<root>/<stem>.json`` (the result) and ``<root>/<stem>.yaml`` (``values`` as a config to
    add); returns the YAML file."""
    root.mkdir(parents=True, exist_ok=True)
    path = write_override_file(root / f"{stem}.yaml", values, header)
    (root / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------ learning rate
def find_lr(
    commands: TuneCommands,
    recipe_args: list[str],
    config: dict,
    root: Path,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_training: int = 100,
    mode: str = "exponential",
    early_stop_threshold: float | None = 4.0,
    rule: str = "log",
) -> dict:
    """Run the range test (see the module docstring) and write its files into ``root``.

    Returns:
        ``{"suggestion", "fields", "lrs", "losses", "steps", "searched_on", "files"}``.

    Raises:
        ConfigError: the recipe has no optimizer ``lr`` to set, or the range is empty.
    """
    if not 0 < min_lr < max_lr:
        raise ConfigError(f"--min_lr ({min_lr}) must be above 0 and below --max_lr ({max_lr}).")
    fields = lr_fields(config)
    if not fields:
        raise ConfigError(
            "the recipe's model has no `model.init_args.optimizer.init_args.lr` to tune. Fix: "
            "give it an optimizer with a learning rate (e.g. class_path: torch.optim.AdamW, "
            "init_args: {lr: 0.001})."
        )
    rank, world = launched_rank()
    result_file = root / "lr.json"
    if rank != 0:
        return wait_for(result_file, time.time() - 1)
    import matplotlib.pyplot as plt
    from lightning.pytorch import Trainer
    from lightning.pytorch.tuner import Tuner

    with one_process():
        cli = commands.build(recipe_args)
        kwargs = commands.trainer_kwargs(cli)
        several = several_devices(kwargs) or (f"{world} launched processes" if world > 1 else None)
        trainer = Trainer(**single_device_kwargs(kwargs, root))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            finder = Tuner(trainer).lr_find(
                cli.model,
                datamodule=cli.datamodule,
                min_lr=min_lr,
                max_lr=max_lr,
                num_training=num_training,
                mode=mode,
                early_stop_threshold=early_stop_threshold,
                update_attr=False,
            )
    lightning_suggestion = finder.suggestion() if finder is not None else None
    steepest = (
        steepest_per_log_step(finder.results["lr"], finder.results["loss"]) if finder else None
    )
    suggestion = steepest if rule == "log" else lightning_suggestion
    if suggestion is None:
        raise ConfigError(
            f"the learning-rate finder found no rate: the loss was not finite over the range "
            f"{min_lr}..{max_lr} ({len(finder.results.get('loss', [])) if finder else 0} steps). "
            "Fix: a narrower range (--min_lr, --max_lr) or more steps (--num_training)."
        )
    root.mkdir(parents=True, exist_ok=True)
    figure = finder.plot(suggest=False)
    ax = figure.axes[0]
    at = min(
        range(len(finder.results["lr"])), key=lambda i: abs(finder.results["lr"][i] - suggestion)
    )
    ax.plot(suggestion, finder.results["loss"][at], "o", color="tab:red", markersize=9,
            label=f"suggestion ({rule} rule): {suggestion:.3g}")  # fmt: skip
    if lightning_suggestion is not None and rule != "lightning":
        ax.axvline(lightning_suggestion, color="grey", linestyle=":",
                   label=f"Lightning's suggestion(): {lightning_suggestion:.3g}")  # fmt: skip
    ax.legend()
    ax.set_title(f"learning-rate range test: suggestion {suggestion:.3g}")
    figure.tight_layout()
    figure.savefig(root / "lr_find.png", dpi=110)
    plt.close(figure)
    values = dict.fromkeys(fields, float(suggestion))
    result = {
        "suggestion": float(suggestion),
        "rule": rule,
        "steepest_per_log_step": steepest,
        "lightning_suggestion": lightning_suggestion,
        "fields": fields,
        "steps": len(finder.results["lr"]),
        "lrs": [float(x) for x in finder.results["lr"]],
        "losses": [float(x) if math.isfinite(x) else None for x in finder.results["loss"]],
        "searched_on": "one device" + (f" (the recipe: {several})" if several else ""),
        "recipe_args": recipe_args,
    }
    header = [
        f"The learning-rate range test's suggestion, {suggestion:.4g} ({result['steps']} steps "
        f"from {min_lr:g} to {max_lr:g}; the recipe had {', '.join(f'{short_field(k)} {v}' for k, v in fields.items())}).",
        f"Plot: {root / 'lr_find.png'}. Add it to the recipe:",
        f"  lifecycle fit {' '.join(recipe_args)} --config {root / 'lr.yaml'}",
    ]
    path = write_result(root, "lr", result, values, header)
    result["files"] = [str(path), str(root / "lr.json"), str(root / "lr_find.png")]
    (root / "lr.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def steepest_per_log_step(
    lrs: list[float], losses: list[float], skip_begin: int = 10, skip_end: int = 1
) -> float | None:
    """The rate where the (smoothed) loss falls fastest per step of a log-spaced sweep: the most
    negative gradient of the loss against ``log(lr)``, the first ``skip_begin`` and last
    ``skip_end`` points left out as Lightning's ``suggestion()`` leaves them. None with fewer
    than 3 finite points."""
    import numpy as np

    lr, loss = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    keep = slice(skip_begin, len(lr) - skip_end if skip_end else None)
    lr, loss = lr[keep], loss[keep]
    finite = np.isfinite(loss) & (lr > 0)
    lr, loss = lr[finite], loss[finite]
    if len(lr) < 3:
        return None
    return float(lr[int(np.argmin(np.gradient(loss, np.log(lr))))])


# --------------------------------------------------------------------------------- batch size
class _StepTimer:
    """Times training steps after ``warmup`` of them (a Lightning callback, built lazily)."""

    def __new__(cls, warmup: int):
        from lightning.pytorch import Callback

        class StepTimer(Callback):
            def __init__(self):
                self.warmup, self.times, self.samples, self._start = warmup, [], [], None

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self._start = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step > self.warmup:
                    self.times.append(time.perf_counter() - self._start)

        return StepTimer()


def _accelerator_has_memory_limit(kwargs: dict) -> bool:
    import torch

    accelerator = str(kwargs.get("accelerator") or "auto")
    return accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def find_batch_size(
    commands: TuneCommands,
    recipe_args: list[str],
    config: dict,
    root: Path,
    mode: str = "auto",
    min_size: int = 16,
    max_size: int = 1024,
    steps: int = 10,
    warmup: int = 3,
    scale_lr: str = "none",
) -> dict:
    """Find the batch size (see the module docstring) and write its files into ``root``.

    Args:
        mode: ``memory`` (the largest that fits, GPUs), ``throughput`` (the most samples per
            second) or ``auto`` (memory on a GPU, throughput on a CPU).
        min_size, max_size: the sizes tried (powers of two between them, and at most the
            training set).
        steps, warmup: training steps timed per size, after ``warmup`` untimed ones.
        scale_lr: ``none``, ``linear`` or ``sqrt``: how the learning rate follows the batch.

    Returns:
        ``{"batch_size", "recipe_batch_size", "mode", "tried", "lr", "files", ...}``.
    """
    if not 1 <= min_size <= max_size:
        raise ConfigError(
            f"--min_size ({min_size}) must be at least 1 and at most --max_size ({max_size})."
        )
    if scale_lr not in ("none", "linear", "sqrt"):
        raise ConfigError(f"--scale_lr must be none, linear or sqrt, got {scale_lr!r}.")
    data_args = _section(config, "data", "init_args")
    recipe_batch = data_args.get("batch_size")
    if not isinstance(recipe_batch, int) or isinstance(recipe_batch, bool):
        raise ConfigError(
            f"the recipe's `data.init_args.batch_size` is {recipe_batch!r}; the batch-size finder "
            "needs a number of samples there (not `full`)."
        )
    rank, world = launched_rank()
    if rank != 0:
        return wait_for(root / "batch_size.json", time.time() - 1)
    from lightning.pytorch import Trainer

    with one_process():
        cli = commands.build(recipe_args)
        kwargs = commands.trainer_kwargs(cli)
        several = several_devices(kwargs) or (f"{world} launched processes" if world > 1 else None)
        single = single_device_kwargs(kwargs, root)
        memory = mode == "memory" or (mode == "auto" and _accelerator_has_memory_limit(kwargs))
        if memory:
            from lightning.pytorch.tuner import Tuner

            trainer = Trainer(**single)
            found = Tuner(trainer).scale_batch_size(
                cli.model, datamodule=cli.datamodule, mode="binsearch", init_val=recipe_batch,
                max_trials=int(math.log2(max(max_size, 2))) + 2, steps_per_trial=steps,
            )  # fmt: skip
            tried = [{"batch_size": int(found), "fits": True}]
            chosen = int(found)
        else:
            tried, chosen = _throughput_search(cli, single, min_size, max_size, steps, warmup)
    factor = chosen / recipe_batch
    factor = {"none": 1.0, "linear": factor, "sqrt": math.sqrt(factor)}[scale_lr]
    values: dict[str, Any] = {"data.init_args.batch_size": chosen}
    lrs = lr_fields(config)
    if scale_lr != "none":
        values.update({k: float(v) * factor for k, v in lrs.items() if isinstance(v, int | float)})
    result = {
        "batch_size": chosen,
        "recipe_batch_size": recipe_batch,
        "mode": "memory" if memory else "throughput",
        "tried": tried,
        "scale_lr": scale_lr,
        "lr": {k: values.get(k, v) for k, v in lrs.items()},
        "searched_on": "one device"
        + (f" (the recipe: {several}; the size is per device)" if several else ""),
        "recipe_args": recipe_args,
    }
    root.mkdir(parents=True, exist_ok=True)
    files = []
    if not memory:
        files.append(_plot_throughput(root, tried, chosen))
    how = "the largest that fits" if memory else "the most samples per second"
    header = [
        f"The batch size with {how}: {chosen} (the recipe had {recipe_batch})"
        + (f"; learning rate scaled {scale_lr} ({factor:.3g}x)." if scale_lr != "none" else "."),
        "Add it to the recipe:",
        f"  lifecycle fit {' '.join(recipe_args)} --config {root / 'batch_size.yaml'}",
    ]
    path = write_result(root, "batch_size", result, values, header)
    result["files"] = [str(path), str(root / "batch_size.json"), *map(str, files)]
    (root / "batch_size.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _throughput_search(cli, single: dict, min_size: int, max_size: int, steps: int, warmup: int):
    from lightning.pytorch import Trainer

    datamodule, initial = cli.datamodule, copy.deepcopy(cli.model)
    original = datamodule.batch_size
    datamodule.setup("fit")
    train_size = len(datamodule.train_dataloader().dataset)
    sizes, size = [], 1
    while size <= min(max_size, train_size):
        if size >= min_size:
            sizes.append(size)
        size *= 2
    if not sizes:
        raise ConfigError(
            f"no power of two in --min_size {min_size}..--max_size {max_size} fits the training set ({train_size})."
        )
    tried: list[dict] = []
    best, slower = None, 0
    for size in sizes:
        datamodule.batch_size = size
        timer = _StepTimer(warmup)
        trainer = Trainer(**{**single, "max_steps": warmup + steps, "max_epochs": -1,
                             "limit_val_batches": 0, "num_sanity_val_steps": 0,
                             "callbacks": [timer]})  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(copy.deepcopy(initial), datamodule=datamodule)
        if not timer.times:
            break
        seconds = sorted(timer.times)[len(timer.times) // 2]  # the median step
        rate = size / seconds
        tried.append(
            {
                "batch_size": size,
                "samples_per_second": round(rate, 1),
                "median_step_seconds": round(seconds, 5),
                "steps": len(timer.times),
            }
        )
        if best is None or rate > best["samples_per_second"]:
            best, slower = tried[-1], 0
        else:
            slower += 1
            if slower >= 2:
                break
    datamodule.batch_size = original
    return tried, best["batch_size"]


def _plot_throughput(root: Path, tried: list[dict], chosen: int) -> Path:
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6.4, 4.0))
    sizes = [t["batch_size"] for t in tried]
    rates = [t["samples_per_second"] for t in tried]
    ax.plot(sizes, rates, marker="o")
    ax.axvline(chosen, color="tab:red", linestyle="--", label=f"chosen: {chosen}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("training samples per second")
    ax.set_title("training throughput by batch size (one device)")
    ax.legend()
    figure.tight_layout()
    path = root / "batch_size.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
