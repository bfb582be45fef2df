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
