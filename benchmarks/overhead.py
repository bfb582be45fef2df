"""Lightning overhead: ``ClassificationModule`` + ``Trainer`` against a plain PyTorch loop.

The same CNN (the main recipe's), the same Fashion-MNIST images (a stratified 20k subset),
batch size, seed, optimizer and number of steps, trained by both sides; the two sides alternate
over several repeats (the machine is shared and noisy) and the medians are compared.

- ``time_ratio``: median Lightning time / median plain-loop time (target <= 1.05);
- ``max_abs_loss_diff``: the largest difference between the two sides' per-step losses
  (target: equal to 4 decimals, i.e. < 5e-5).

The Lightning side runs as a user would with logging off: no progress bar, logger, checkpoint
or model summary, no validation; it still updates the module's torchmetrics accuracy and calls
``self.log`` every step, which the plain loop does not.

    python benchmarks/overhead.py [--repeats 5] [--subset 20000]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, write_result  # noqa: E402

from lifecycle.data import ImageClassificationDataModule  # noqa: E402
from lifecycle.models import SmallCNN  # noqa: E402
from lifecycle.stages import ClassificationModule  # noqa: E402

SEED = 42
LR = 3e-3


def build(seed: int) -> ClassificationModule:
    torch.manual_seed(seed)
    backbone = SmallCNN(
        in_channels=1, channels=[32, 64], convs_per_block=2, pool_size=4, hidden=256, dropout=0.0
    )
    return ClassificationModule(
        backbone, num_classes=10, optimizer=partial(torch.optim.AdamW, lr=LR, weight_decay=0.05)
    )


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def run_lightning(dm: ImageClassificationDataModule, steps: int) -> tuple[float, list[float]]:
    model = build(SEED)
    recorder = LossRecorder()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[recorder],
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=dm.train_dataloader())
    return time.perf_counter() - start, recorder.losses


def run_plain(dm: ImageClassificationDataModule, steps: int) -> tuple[float, list[float]]:
    model = build(SEED)
    start = time.perf_counter()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    model.train()
    losses: list[float] = []
    while len(losses) < steps:
        for batch in dm.train_dataloader():
            logits = model(batch["image"])
            loss = F.cross_entropy(logits, batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return time.perf_counter() - start, losses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--subset", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    dm = ImageClassificationDataModule(
        "fashion-mnist", train_subset=args.subset, batch_size=args.batch_size, seed=SEED
    )
    dm.setup("fit")
    steps = len(dm.train_dataloader())  # one epoch
    run_lightning(dm, 5), run_plain(dm, 5)  # warm-up: first-call allocations and imports
    times: dict[str, list[float]] = {"lightning": [], "plain": []}
    losses: dict[str, list[float]] = {}
    for r in range(args.repeats):
        order = [("lightning", run_lightning), ("plain", run_plain)]
        for name, fn in order if r % 2 == 0 else order[::-1]:  # alternate who goes first
            seconds, losses[name] = fn(dm, steps)
            times[name].append(seconds)
            print(
                f"repeat {r}: {name:9s} {seconds:6.2f} s  final loss {losses[name][-1]:.5f}",
                flush=True,
            )
    diff = max(abs(a - b) for a, b in zip(losses["lightning"], losses["plain"], strict=True))
    ratio = median(times["lightning"]) / median(times["plain"])
    write_result(
        "overhead",
        {
            "time_ratio": round(ratio, 4),
            "max_abs_loss_diff": diff,
            "lightning_seconds_median": round(median(times["lightning"]), 3),
            "plain_seconds_median": round(median(times["plain"]), 3),
            "lightning_seconds": [round(t, 3) for t in times["lightning"]],
            "plain_seconds": [round(t, 3) for t in times["plain"]],
            "ratios_per_repeat": [
                round(a / b, 4) for a, b in zip(times["lightning"], times["plain"], strict=True)
            ],
            "final_loss": {k: round(v[-1], 6) for k, v in losses.items()},
            "steps": steps,
            "images": args.subset,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "target_time_ratio": 1.05,
            "meets_target": bool(ratio <= 1.05 and diff < 5e-5),
        },
    )


if __name__ == "__main__":
    main()
