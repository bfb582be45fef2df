"""GPU check: the paths CI (no accelerator) cannot run, in one prepared script of at most 8 minutes.

1. ``gpu_tests``: ``tests/training/test_gpu.py`` (FSDP1 norm clipping and block wrapping,
   16-mixed unscaled gradients reaching ``GradientHealth``, DeepSpeed ZeRO-2 clipping where
   ``deepspeed`` is installed), each test's outcome and, for a skip, its reason.
2. ``steps_per_second``: the main recipe (``recipes/fashion_mnist/classify.yaml``: its model,
   batch size, precision and data) trained for ``--steps`` steps on the GPU and on the CPU,
   timed after ``--warmup`` steps (the GPU synchronized before each reading), and their ratio.
   Where the Fashion-MNIST files are missing (a bare GPU machine), random images of the same
   shape and count stand in (``data`` says which): steps per second do not depend on pixel
   values.
3. ``fsdp2_two_gpus``: a 2-process FSDP2 fit of the digits recipe on two GPUs (NCCL) through
   the CLI with ``recipes/strategies/fsdp2.yaml``, when the machine has two; otherwise recorded
   as skipped with the reason.

    python benchmarks/gpu_check.py [--steps 300] [--warmup 30] [--budget 480]

Writes ``benchmarks/results/gpu.json``. Without CUDA it stops with a message and writes
nothing (``--allow-cpu`` runs every part that can run, to check the script itself, into
``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from common import RESULTS, machine  # noqa: E402

RECIPE = REPO / "recipes/fashion_mnist/classify.yaml"


def remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def gpu_tests(deadline: float) -> dict:
    """Run the GPU-only tests in a subprocess and read each outcome from its JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "tests/training/test_gpu.py", "-q", "-rA",
                   "-p", "no:cacheprovider", f"--junitxml={report}"]  # fmt: skip
        started = time.monotonic()
        try:
            proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                  timeout=min(240.0, remaining(deadline)))  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"error": "timed out", "seconds": round(time.monotonic() - started, 1)}
        tests = {}
        if report.exists():
            for case in ET.parse(report).iter("testcase"):
                outcome, detail = "passed", ""
                for child in case:
                    if child.tag in ("failure", "error", "skipped"):
                        outcome = {"failure": "failed"}.get(child.tag, child.tag)
                        detail = (child.get("message") or "")[:300]
                tests[case.get("name")] = {"outcome": outcome, "detail": detail}
        return {
            "returncode": proc.returncode,
            "seconds": round(time.monotonic() - started, 1),
            "tests": tests,
            "output_tail": proc.stdout[-1500:] if proc.returncode not in (0, 5) else "",
        }


def stand_in_data(folder: Path) -> str:
    """Random images with Fashion-MNIST's shapes and class count, as an ``.npz`` dataset."""
    import numpy as np

    rng = np.random.default_rng(0)
    path = folder / "fashion_mnist_shaped.npz"
    np.savez(path, x=rng.integers(0, 256, (60_000, 28, 28, 1), dtype=np.uint8),
             y=rng.integers(0, 10, 60_000), x_test=rng.integers(0, 256, (10_000, 28, 28, 1), dtype=np.uint8),
             y_test=rng.integers(0, 10, 10_000))  # fmt: skip
    return str(path)


def steps_per_second(accelerator: str, steps: int, warmup: int, dataset: str | None) -> dict:
    """Train the main recipe for ``steps`` steps and time the steps after ``warmup``."""
    import lightning as L
    import torch

    from lifecycle.cli import LifecycleCLI, recipe_cli

    class StepClock(L.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_end(self, trainer, *args):
            if accelerator == "gpu":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = ["--config", str(RECIPE), "--trainer.accelerator", accelerator,
                "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
                "--trainer.enable_checkpointing", "false", "--trainer.logger", "false",
                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", tmp]  # fmt: skip
        if dataset:
            args += ["--data.init_args.dataset", dataset]
        cli = recipe_cli(LifecycleCLI, args)
        clock = StepClock()
        cli.trainer.callbacks.append(clock)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    timed = clock.times[warmup:]
    rate = (len(timed) - 1) / (timed[-1] - timed[0])
    return {"steps_per_second": round(rate, 2), "timed_steps": len(timed) - 1,
            "precision": str(cli.trainer.precision), "batch_size": cli.datamodule.batch_size}  # fmt: skip


def fsdp2_two_gpus(deadline: float) -> dict:
    import torch

    if torch.cuda.device_count() < 2:
        return {"skipped": f"needs 2 GPUs; this machine has {torch.cuda.device_count()}"}
    with tempfile.TemporaryDirectory() as tmp:
        # Lightning launches the second process itself, as a user's run would
        command = [sys.executable, "-m", "lifecycle", "fit", "--config", "recipes/digits/classify.yaml",
                   "--config", "recipes/strategies/fsdp2.yaml", "--trainer.accelerator", "gpu",
                   "--trainer.devices", "2", "--trainer.max_epochs", "2",
                   "--trainer.default_root_dir", tmp, "--run_name", "fsdp2"]  # fmt: skip
        try:
            proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                  timeout=min(180.0, remaining(deadline)))  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"error": "timed out"}
        metrics = sorted(Path(tmp).glob("fsdp2/version_*/metrics.json"))
        accuracy = (
            json.loads(metrics[0].read_text())["metrics"].get("accuracy") if metrics else None
        )
        return {"returncode": proc.returncode, "test_accuracy": accuracy,
                "output_tail": proc.stderr[-1500:] if proc.returncode else ""}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check")
    parser.add_argument("--allow-cpu", action="store_true", help="check the script without CUDA")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    options = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not options.allow_cpu:
        raise SystemExit("gpu_check: no CUDA GPU here; run it on a GPU machine (nothing written)")
    deadline = time.monotonic() + options.budget
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result: dict = {"cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name(0)
        result["gpus"] = torch.cuda.device_count()
    result["gpu_tests"] = gpu_tests(deadline)

    from lifecycle.data.datasets import DatasetNotFoundError, load_fashion_mnist

    with tempfile.TemporaryDirectory() as tmp:
        try:
            load_fashion_mnist()
            dataset, result["data"] = None, "fashion-mnist"
        except DatasetNotFoundError:
            dataset = stand_in_data(Path(tmp))
            result["data"] = "random images shaped like Fashion-MNIST (its files are missing here)"
        rates = {}
        for accelerator in ("gpu", "cpu") if torch.cuda.is_available() else ("cpu",):
            if remaining(deadline) < 60:
                rates[accelerator] = {"skipped": "out of time"}
                continue
            # the CPU is slow: a third of the steps gives a steady figure
            steps = (
                options.steps
                if accelerator == "gpu"
                else max(options.steps // 3, options.warmup + 20)
            )
            rates[accelerator] = steps_per_second(accelerator, steps, options.warmup, dataset)
        result["steps_per_second"] = rates
        if "steps_per_second" in rates.get("gpu", {}) and "steps_per_second" in rates.get(
            "cpu", {}
        ):
            result["gpu_over_cpu"] = round(
                rates["gpu"]["steps_per_second"] / rates["cpu"]["steps_per_second"], 1
            )
    result["fsdp2_two_gpus"] = (
        fsdp2_two_gpus(deadline) if torch.cuda.is_available() else {"skipped": "no CUDA"}
    )
    result["protocol"] = {"steps": options.steps, "warmup": options.warmup,
                          "budget_s": options.budget, "recipe": str(RECIPE.relative_to(REPO))}  # fmt: skip
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
