"""Augmentation benchmark: pipeline throughput, the share of step time spent waiting for data,
and what the ``medium`` preset buys on a small Fashion-MNIST training set.

1. Throughput of the ``medium`` train pipeline (augment + normalize) in images/s: in one
   process (``ImageDataset`` batches of 128), and through the DataLoader with 2 fork workers
   (a second pass, so worker start-up is not counted).
2. ``data_wait_share``: in the default Fashion-MNIST recipe (``recipes/fashion_mnist/classify.yaml``
   as shipped, no augmentation), the share of each training step spent between the end of one
   batch and the start of the next (fetching data), over 150 steps. Also reported for the
   recipe with ``train_transforms: medium`` and 2 workers, where augmentation runs on the same
   2 cores as training.
3. Accuracy, under the protocol of benchmarks/README.md: the recipe's model and schedule on a
   5,000-image stratified training subset (seed 42), ``medium`` preset vs none. Each side gets
   the same selection budget, per seed: the one-cycle schedule at 30 and at 60 epochs, the
   one with the better validation accuracy (6,000 images held out of the 60k training images;
   each run's best checkpoint by val/loss) tested once on the full 10,000-image test set. Seeds
   0, 1, 2 (``seed_everything``), the side that runs first alternating by seed; the gain is the
   median of the per-seed differences, with min and max.

Targets: ``data_wait_share`` <= 0.10; ``acc_aug - acc_no_aug`` >= 0.01 (median of 3 seeds).

How the current ``medium`` was chosen (same script and seed, this machine). At 30 epochs ``none``
0.9002, a first ``medium`` (shifts 10%, zoom 10%, rotation 10 degrees, Cutout 20-35%) 0.8907,
``light`` 0.8984; at 60 epochs ``none`` 0.8987 and that first ``medium`` 0.9035 (test accuracy).
Then five gentler variants at 60 epochs, compared on *validation* accuracy (6,000 held-out
training images) so the test set played no part in the choice: none 0.9145; flip, 6.25% shifts,
5% zoom, 8 degree rotation and a 15-25% Cutout 0.9185; the same without rotation 0.9208; without
rotation or zoom 0.9172; without rotation, Cutout on 80% of images 0.9177. The one without
rotation (Fashion-MNIST's garments are upright) is the current ``medium``. The recipe already
regularizes hard (dropout 0.3, label smoothing 0.1, weight decay 0.05), so augmentation only pays
once training is long enough to overfit without it. (That 60 epochs was then picked after
test accuracies had been seen; the schedule is now chosen on validation for each side.)

    python benchmarks/augmentation.py                       # about 45 minutes
    python benchmarks/augmentation.py --seeds 0 --epochs 1 2 --out /tmp/aug.json   # a smoke run

Writes ``benchmarks/results/augmentation.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import spread, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = "recipes/fashion_mnist/classify.yaml"


class DataWait(L.Callback):
    """Time between one training batch's end and the next one's start: the data fetch."""

    def __init__(self, skip: int = 10):
        self.skip, self.waits, self.steps, self._end, self._start = skip, [], [], None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self._end is not None and batch_idx > self.skip:
            self.waits.append(now - self._end)
            self.steps.append(now - self._start)
        self._start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._end = time.perf_counter()

    def share(self) -> float:
        return sum(self.waits) / sum(self.steps)


def cli(root: str, *overrides: str):
    from lifecycle.cli import LifecycleCLI, recipe_cli

    return recipe_cli(LifecycleCLI, [
        "--config", str(REPO / RECIPE), "--trainer.default_root_dir", root,
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        *overrides,
    ])  # fmt: skip


def throughput() -> dict:
    from lifecycle.data import ImageClassificationDataModule

    dm = ImageClassificationDataModule(
        "fashion-mnist", train_transforms="medium", train_subset=10_000
    )
    dm.setup()
    dataset = dm.split_dataset("train")
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for first in range(0, 5_000, 128):
            dataset.__getitems__([(0, i) for i in range(first, min(first + 128, 5_000))])
        rates.append(5_000 / (time.perf_counter() - start))
    loader_dm = ImageClassificationDataModule(
        "fashion-mnist", train_transforms="medium", train_subset=10_000, num_workers=2
    )
    loader_dm.setup()
    loader = loader_dm.train_dataloader()
    loader_rates = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["label"])
        if epoch:  # the first pass includes starting the workers
            loader_rates.append(n / (time.perf_counter() - start))
    return {
        "images_per_s_1proc": round(statistics.median(rates)),
        "images_per_s_loader": round(statistics.median(loader_rates)),
    }


def data_wait(root: str, *overrides: str) -> float:
    run = cli(root, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "150",
              "--trainer.limit_val_batches", "0", "--test_after_fit", "false", *overrides)  # fmt: skip
    probe = DataWait()
    run.trainer.callbacks.append(probe)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    return round(probe.share(), 4)


def fit_and_validate(root: str, seed: int, epochs: int, transforms: str) -> dict:
    run = cli(root, "--data.init_args.train_subset", "5000", "--trainer.max_epochs", str(epochs),
              "--data.init_args.train_transforms", transforms, "--test_after_fit", "false",
              "--seed_everything", str(seed),
              "--run_name", f"acc-{transforms}-s{seed}-e{epochs}")  # fmt: skip
    start = time.perf_counter()
    run.trainer.fit(run.model, datamodule=run.datamodule)
    seconds = time.perf_counter() - start
    ckpt = run.trainer.checkpoint_callback.best_model_path
    val = run.trainer.validate(run.model, datamodule=run.datamodule, ckpt_path=ckpt,
                               verbose=False)[0]  # fmt: skip
    return {"side": transforms, "seed": seed, "epochs": epochs,
            "val_accuracy": round(val["val/accuracy"], 4), "train_seconds": round(seconds, 1),
            "run": run, "ckpt": ckpt}  # fmt: skip


def test_chosen(chosen: dict) -> float:
    run = chosen["run"]
    result = run.trainer.test(run.model, datamodule=run.datamodule, ckpt_path=chosen["ckpt"],
                              verbose=False)[0]  # fmt: skip
    return round(result["test/accuracy"], 4)


def accuracy_comparison(root: str, seeds: list[int], epoch_choices: list[int]) -> dict:
    """Per seed and side: fit at each epoch count, choose on validation, test the chosen once."""
    per_seed, selection = {}, []
    for i, seed in enumerate(seeds):
        order = ("none", "medium") if i % 2 == 0 else ("medium", "none")
        per_seed[seed] = {"order": list(order)}
        for side in order:
            runs = [fit_and_validate(root, seed, e, side) for e in epoch_choices]
            chosen = max(runs, key=lambda r: r["val_accuracy"])
            test = test_chosen(chosen)
            for r in runs:
                r.pop("run"), r.pop("ckpt")
                selection.append(r)
                print(json.dumps(r), flush=True)
            per_seed[seed][side] = {"epochs": chosen["epochs"], "val_accuracy": chosen["val_accuracy"],
                                    "test_accuracy": test, "train_seconds": chosen["train_seconds"]}  # fmt: skip
    none = [per_seed[s]["none"]["test_accuracy"] for s in seeds]
    medium = [per_seed[s]["medium"]["test_accuracy"] for s in seeds]
    gains = [m - n for m, n in zip(medium, none, strict=True)]
    return {
        "acc_no_aug": spread(none),
        "acc_aug": spread(medium),
        "acc_gain": {**spread(gains), "seeds_favouring_aug": sum(g > 0 for g in gains)},
        "train_seconds_no_aug": spread([per_seed[s]["none"]["train_seconds"] for s in seeds], 1),
        "train_seconds_aug": spread([per_seed[s]["medium"]["train_seconds"] for s in seeds], 1),
        "chosen_epochs": {
            side: [per_seed[s][side]["epochs"] for s in seeds] for side in ("none", "medium")
        },  # fmt: skip
        "per_seed": per_seed,
        "selection_runs": selection,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", nargs="+", type=int, default=[30, 60],
                        help="the schedules each side chooses among on validation")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", help="write here instead of benchmarks/results/ (smoke runs)")
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        result = throughput()
        result["data_wait_share"] = data_wait(root)
        result["data_wait_share_medium_2_workers"] = data_wait(
            root, "--data.init_args.train_transforms", "medium", "--data.init_args.num_workers", "2"
        )
        result.update(accuracy_comparison(root, args.seeds, args.epochs))
    result.update(
        {
            "accuracy_setup": f"{RECIPE}, 5,000 training images (stratified, seed 42), "
            f"{' or '.join(map(str, args.epochs))} epochs chosen on validation per side and "
            "seed, best val/loss checkpoint, full 10k test set",
            "targets": {"data_wait_share": "<= 0.10", "acc_gain": ">= 0.01 (median)"},
            "total_seconds": round(time.perf_counter() - began, 1),
            "protocol": {
                "seeds": args.seeds,
                "seed_draws": "seed_everything (initialization, batch order, augmentation "
                "draws); the 5,000-image subset and the validation split are fixed (seed 42)",
                "selection": "val: per side and seed, the schedule with the better validation "
                "accuracy (6,000 held-out training images)",
                "selection_runs_per_side": len(args.epochs),
                "selection_space": f"one-cycle schedule length, {args.epochs} epochs (the "
                "`medium` variant itself was chosen earlier among 5 on validation; see the "
                "docstring)",
                "budget": "equal epochs offered to both sides; batch 128; train seconds of "
                "each chosen run stated",
                "test_reads": "once per side per seed",
                "timing": "the side that runs first alternates by seed",
            },
        }
    )
    result["meets_target"] = bool(
        result["data_wait_share"] <= 0.10 and result["acc_gain"]["median"] >= 0.01
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    else:
        write_result("augmentation", result)


if __name__ == "__main__":
    main()
