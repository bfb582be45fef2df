"""Helpers shared by the benchmark scripts: machine facts and writing results JSON."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# The checkout's package before this folder: Python puts a script's own folder first on
# sys.path, where benchmarks/lifecycle.py would shadow the `lifecycle` package.
sys.path.insert(0, str(RESULTS.parents[1]))


def machine() -> dict:
    import lightning
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float | None], digits: int = 4) -> dict:
    """Median, min, max and the per-seed values (``None`` values left out), rounded: how every
    benchmark reports a figure over seeds."""
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "per_seed": []}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "per_seed": [round(v, digits) for v in values],
    }


def snapshot_code(repo: Path, folders: tuple[str, ...]) -> Path:
    """A copy of ``folders`` of ``repo`` in a new temporary folder outside the checkout, for
    ``python -m lifecycle`` to import (the current folder comes first on ``sys.path``) and for
    recipes' relative paths: an edit of the checkout during a benchmark changes nothing."""
    import tempfile

    code = Path(tempfile.mkdtemp(prefix="lifecycle-benchmark-code-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in folders:
        shutil.copytree(repo / name, code / name, ignore=ignore)
    return code


def quiet_evaluator(**kw):
    """A quiet one-device CPU ``Trainer`` for ``validate`` and ``test`` calls (``kw``: more
    Trainer options, e.g. the ``limit_*_batches`` of a smoke run)."""
    import lightning as L

    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)  # fmt: skip


def lr_grid(base: float, multipliers) -> list[dict]:
    """The learning-rate settings of a side's selection runs: ``base`` times each multiplier
    (three significant digits), as ``select_and_test``'s setting dicts."""
    return [{"lr": float(f"{base * m:.3g}")} for m in multipliers]


def select_and_test(run, sides: dict, settings: dict, seeds: list[int], selection: list) -> dict:
    """The protocol (``benchmarks/README.md``) for sides compared on the same seeds.

    Each side's setting is chosen among ``settings[side]`` (a list of dicts, the same number for
    every side) on validation at the first seed; the runs are appended to ``selection`` with
    their validation figures. Then each side trains at its chosen setting on the other seeds, the
    order of the sides reversed from one seed to the next (so timings alternate), and the test
    set is read once per side and seed: the first seed's from the selection run's own model.

    ``run(side, seed, setting)`` trains one model and returns ``{"val": float, "train_seconds":
    float, "test": callable}``, the callable reading the test set (a float or a dict of
    figures). ``sides`` maps each side to the name its selection runs are saved under. Returns
    ``tests`` and ``train_seconds`` (per side, a list over seeds), ``chosen`` (per side, the
    setting) and ``val`` (per side, the chosen setting's validation figure).
    """
    if len({len(settings[side]) for side in sides}) != 1:
        raise ValueError("every side gets the same number of selection runs")
    chosen, val, best_runs = {}, {}, {}
    for side, name in sides.items():
        runs = []
        for setting in settings[side]:
            result = run(side, seeds[0], setting)
            runs.append((setting, result))
            selection.append({"side": name, "seed": seeds[0], **setting,
                              "val_accuracy": result["val"],
                              "train_seconds": result["train_seconds"]})  # fmt: skip
            print(f"selection {name} {setting}: val {result['val']}", flush=True)
        chosen[side], best_runs[side] = max(runs, key=lambda r: r[1]["val"])
        val[side] = best_runs[side]["val"]
    tests = {side: [best_runs[side]["test"]()] for side in sides}
    seconds = {side: [best_runs[side]["train_seconds"]] for side in sides}
    order = list(sides)
    for seed in seeds[1:]:
        order.reverse()
        for side in order:
            result = run(side, seed, chosen[side])
            tests[side].append(result["test"]())
            seconds[side].append(result["train_seconds"])
    return {"tests": tests, "train_seconds": seconds, "chosen": chosen, "val": val}


def gain(treatment: list[float], baseline: list[float]) -> dict:
    """Per-seed differences ``treatment - baseline`` as a spread, with how many favour the
    treatment."""
    diffs = [a - b for a, b in zip(treatment, baseline, strict=True)]
    return {**spread(diffs), "seeds_favouring": sum(d > 0 for d in diffs)}
