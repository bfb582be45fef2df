"""Lightning overhead: ``ClassificationModule`` + ``Trainer`` against a plain PyTorch loop.

The same CNN (the main recipe's), the same Fashion-MNIST images (a stratified 20k subset),
batch size, seed, optimizer and number of steps, trained by both sides; the two sides alternate
over several repeats (the machine is shared and noisy) and the medians are compared.

- ``time_ratio``: median Lightning run time / median plain-loop run time (target <= 1.05),
  whole ``fit`` calls, so Lightning's per-run set-up counts;
- ``step_time_ratio``: the same for the median time from one batch's start to the next over
  every step of every repeat, which bursts of noise from other machines sway less;
- ``max_abs_loss_diff``: the largest difference between the two sides' per-step losses
  (target: equal to 4 decimals, i.e. < 5e-5).

The Lightning side runs as a user would with logging off: no progress bar, logger, checkpoint
or model summary, no validation; it still updates the module's torchmetrics accuracy and calls
``self.log`` every step, which the plain loop does not.

    python benchmarks/overhead.py [--repeats 12] [--steps 80] [--subset 20000]
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
    """Per-step losses, and the time each batch starts (as the plain loop records them)."""

    def __init__(self):
        self.losses: list[float] = []
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def step_times(starts: list[float]) -> list[float]:
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def run_lightning(
    dm: ImageClassificationDataModule, steps: int
) -> tuple[float, list[float], list[float]]:
    model = build(SEED)
    recorder = LossRecorder()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[recorder],
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=dm.train_dataloader())
    return time.perf_counter() - start, recorder.losses, step_times(recorder.starts)


def run_plain(
    dm: ImageClassificationDataModule, steps: int
) -> tuple[float, list[float], list[float]]:
    model = build(SEED)
    start = time.perf_counter()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    model.train()
    losses: list[float] = []
    starts: list[float] = []
    while len(losses) < steps:
        for batch in dm.train_dataloader():
            starts.append(time.perf_counter())
            logits = model(batch["image"])
            loss = F.cross_entropy(logits, batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return time.perf_counter() - start, losses, step_times(starts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps per run")
    parser.add_argument("--subset", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    dm = ImageClassificationDataModule(
        "fashion-mnist", train_subset=args.subset, batch_size=args.batch_size, seed=SEED
    )
    dm.setup("fit")
    # short runs, many alternated repeats: the noise of a shared machine drifts over tens of seconds
    steps = args.steps
    run_lightning(dm, 5), run_plain(dm, 5)  # warm-up: first-call allocations and imports
    times: dict[str, list[float]] = {"lightning": [], "plain": []}
    losses: dict[str, list[float]] = {}
    steps_s: dict[str, list[float]] = {"lightning": [], "plain": []}
    for r in range(args.repeats):
        order = [("lightning", run_lightning), ("plain", run_plain)]
        for name, fn in order if r % 2 == 0 else order[::-1]:  # alternate who goes first
            seconds, losses[name], per_step = fn(dm, steps)
            times[name].append(seconds)
            steps_s[name] += per_step
            print(
                f"repeat {r}: {name:9s} {seconds:6.2f} s  final loss {losses[name][-1]:.5f}",
                flush=True,
            )
    diff = max(abs(a - b) for a, b in zip(losses["lightning"], losses["plain"], strict=True))
    ratio = median(times["lightning"]) / median(times["plain"])
    step_ratio = median(steps_s["lightning"]) / median(steps_s["plain"])
    write_result(
        "overhead",
        {
            "time_ratio": round(ratio, 4),
            "max_abs_loss_diff": diff,
            "step_time_ratio": round(step_ratio, 4),
            "lightning_step_ms_median": round(1000 * median(steps_s["lightning"]), 2),
            "plain_step_ms_median": round(1000 * median(steps_s["plain"]), 2),
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
            "protocol": {
                "seeds": [SEED],
                "seeds_note": "one seed: both sides compute the same steps from the same "
                "initial weights and batches (their losses agree to max_abs_loss_diff); the "
                "comparison is of time, repeated and alternated instead",
                "selection": "none: no setting is chosen; both sides run the same fixed "
                "settings (the main recipe's CNN, optimizer and batch size)",
                "selection_runs_per_side": 0,
                "budget": f"equal steps: {steps} steps of {args.batch_size} images a run, "
                f"{args.repeats} runs a side",
                "timing": "the two sides alternate within every repeat; medians compared",
            },
        },
    )


if __name__ == "__main__":
    main()
