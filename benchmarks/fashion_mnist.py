"""Main-recipe benchmark: Fashion-MNIST test accuracy and training time on this machine.

Runs ``lifecycle fit --config recipes/fashion_mnist/classify.yaml`` (which tests the best
checkpoint on the full 10k test set after fitting) exactly as a user would, and writes
``benchmarks/results/fashion_mnist.json``.

Target: test accuracy >= 0.93 within 10 minutes on 2 CPU cores. For scale, a plain
hand-written PyTorch CNN (two conv blocks with BatchNorm, AdamW, one-cycle, no augmentation)
reached 0.928 in 8 epochs / 229 s here (shared/ANCHORS.md).

    python benchmarks/fashion_mnist.py [--recipe recipes/fashion_mnist/classify.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET_ACCURACY = 0.93
TIME_LIMIT_S = 600


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/fashion_mnist/classify.yaml")
    args, extra = parser.parse_known_args()
    from lightning.pytorch import LightningDataModule, LightningModule

    from lifecycle.cli import LifecycleCLI

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        cli = LifecycleCLI(
            LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            seed_everything_default=42, auto_configure_optimizers=False, run=False,
            args=["--config", str(REPO / args.recipe), "--trainer.default_root_dir", root,
                  "--trainer.enable_progress_bar", "false", "--run_name", "bench", *extra],
        )  # fmt: skip
        fit_start = time.perf_counter()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        fit_seconds = time.perf_counter() - fit_start
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
        total = time.perf_counter() - start
        run = Path(cli.trainer.log_dir)
        report = json.loads((run / "metrics.json").read_text())
    accuracy = report["metrics"]["accuracy"]
    params = sum(p.numel() for p in cli.model.parameters())
    write_result(
        "fashion_mnist",
        {
            "recipe": args.recipe,
            "overrides": extra,
            "test_accuracy": round(accuracy, 4),
            "test_macro_f1": round(report["metrics"]["f1"], 4),
            "test_samples": int(sum(map(sum, report["confusion_matrix"]))),
            "train_seconds": round(fit_seconds, 1),
            "total_seconds": round(total, 1),
            "epochs": cli.trainer.current_epoch,
            "params": params,
            "target_accuracy": TARGET_ACCURACY,
            "time_limit_seconds": TIME_LIMIT_S,
            "meets_target": bool(accuracy >= TARGET_ACCURACY and total <= TIME_LIMIT_S),
            "baseline_hand_written_cnn": {
                "test_accuracy": 0.928,
                "train_seconds": 229,
                "epochs": 8,
            },
        },
    )


if __name__ == "__main__":
    main()
