"""Main-recipe benchmark: Fashion-MNIST test accuracy and time on this machine, against a
hand-written PyTorch CNN run in the same script, on the same split, under the same budget.

Per seed (``seed_everything`` and the split's seed), alternating which side runs first:

- **the recipe**: ``lifecycle fit --config recipes/fashion_mnist/classify.yaml`` exactly as a user
  runs it (a subprocess; 15 epochs; its best checkpoint by validation accuracy tested once on
  the full 10k test set);
- **the hand-written CNN** (``--hand-written``, a subprocess too): two conv blocks with
  BatchNorm, dropout, AdamW and a one-cycle schedule, a plain PyTorch loop in fp32, no
  augmentation (shared/ANCHORS.md: 0.928 after 8 epochs in 229 s here), on the recipe's own
  train / validation / test tensors (its DataModule, same seed, same normalization), the same
  15 epochs (about the recipe's wall time), its best epoch by validation accuracy tested once.

Both sides: one run each (no other settings tried), the epoch chosen on validation, test read
once; medians of the seeds with min and max; wall seconds of each process.

Target: test accuracy >= 0.93 within 10 minutes on 2 CPU cores.

    python benchmarks/fashion_mnist.py            # 3 seeds, about 45 minutes
    python benchmarks/fashion_mnist.py --seeds 0 --epochs 1 --out /tmp/fm.json   # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, spread  # noqa: E402

RECIPE = "recipes/fashion_mnist/classify.yaml"
TARGET_ACCURACY = 0.93
TIME_LIMIT_S = 600
EPOCHS = 15


def hand_written(seed: int, epochs: int, out: Path) -> None:
    """The reference: a plain PyTorch loop on the recipe's tensors (runs in its own process)."""
    sys.path.insert(0, str(REPO))
    import torch
    from torch import nn

    from lifecycle.data import ImageClassificationDataModule

    began = time.perf_counter()
    torch.manual_seed(seed)
    data = ImageClassificationDataModule("fashion-mnist", val_fraction=0.1, seed=seed)
    data.setup("fit")
    data.setup("test")
    split = {n: data.split_dataset(n) for n in ("train", "val", "test")}
    x = {n: s.tensor for n, s in split.items()}
    y = {n: s.labels for n, s in split.items()}

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

    net = nn.Sequential(  # 422k parameters, as in shared/ANCHORS.md
        *block(1, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(128, 10),
    )  # fmt: skip
    batch, steps = 128, (len(x["train"]) + 127) // 128
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=epochs * steps
    )
    loss_fn = nn.CrossEntropyLoss()

    def accuracy(name: str) -> float:
        net.eval()
        with torch.no_grad():
            hits = sum((net(xb).argmax(1) == yb).sum().item()
                       for xb, yb in zip(x[name].split(1024), y[name].split(1024), strict=True))  # fmt: skip
        return hits / len(y[name])

    history, best, best_state = [], -1.0, None
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x["train"]))
        for i in range(steps):
            index = order[i * batch : (i + 1) * batch]
            optimizer.zero_grad()
            loss_fn(net(x["train"][index]), y["train"][index]).backward()
            optimizer.step()
            schedule.step()
        val = accuracy("val")
        history.append(round(val, 4))
        if val > best:
            best, best_epoch = val, epoch + 1
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
    train_seconds = time.perf_counter() - began
    net.load_state_dict(best_state)
    out.write_text(json.dumps({
        "test_accuracy": round(accuracy("test"), 4), "best_val_accuracy": round(best, 4),
        "best_epoch": best_epoch, "val_accuracy_by_epoch": history, "epochs": epochs,
        "train_seconds": round(train_seconds, 1), "test_samples": len(y["test"]),
        "params": sum(p.numel() for p in net.parameters()),
    }))  # fmt: skip


def run(args: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed: {done.stderr[-3000:]}")
    return time.perf_counter() - began


def recipe_side(seed: int, epochs: int, root: Path) -> dict:
    seconds = run(["-m", "lifecycle", "fit", "--config", RECIPE, f"--seed_everything={seed}",
                   f"--data.init_args.seed={seed}", f"--trainer.max_epochs={epochs}",
                   f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
                   "--run_name=recipe", "--run_version=0"])  # fmt: skip
    folder = root / "recipe" / "version_0"
    report = json.loads((folder / "metrics.json").read_text())
    with open(folder / "metrics.csv") as handle:
        val = [float(r["val/accuracy"]) for r in csv.DictReader(handle) if r.get("val/accuracy")]
    return {
        "test_accuracy": round(report["metrics"]["accuracy"], 4),
        "test_macro_f1": round(report["metrics"]["f1"], 4),
        "best_val_accuracy": round(max(val), 4),
        "best_epoch": val.index(max(val)) + 1,
        "val_accuracy_by_epoch": [round(v, 4) for v in val],
        "test_samples": int(sum(map(sum, report["confusion_matrix"]))),
        "seconds": round(seconds, 1),
    }


def reference_side(seed: int, epochs: int, root: Path) -> dict:
    out = root / "hand_written.json"
    seconds = run([str(Path(__file__).resolve()), "--hand-written", f"--seeds={seed}",
                   f"--epochs={epochs}", f"--out={out}"])  # fmt: skip
    return {**json.loads(out.read_text()), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--out", type=Path, default=RESULTS / "fashion_mnist.json")
    parser.add_argument("--hand-written", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hand_written:
        hand_written(args.seeds[0], args.epochs, args.out)
        return
    began = time.perf_counter()
    per_seed = {}
    for index, seed in enumerate(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            sides = {}
            order = ["recipe", "hand_written"] if index % 2 == 0 else ["hand_written", "recipe"]
            for side in order:
                print(f"[{time.strftime('%H:%M:%S')}] seed {seed}: {side}", flush=True)
                side_fn = recipe_side if side == "recipe" else reference_side
                sides[side] = side_fn(seed, args.epochs, root)
                print(f"  test {sides[side]['test_accuracy']} in {sides[side]['seconds']} s",
                      flush=True)  # fmt: skip
            per_seed[seed] = {**sides, "order": order}
    seeds = args.seeds

    def of(side: str, key: str) -> list[float]:
        return [per_seed[s][side][key] for s in seeds]

    recipe_acc, hand_acc = of("recipe", "test_accuracy"), of("hand_written", "test_accuracy")
    recipe_s, hand_s = of("recipe", "seconds"), of("hand_written", "seconds")
    gain = [r - h for r, h in zip(recipe_acc, hand_acc, strict=True)]
    result = {
        "recipe": RECIPE,
        "seeds": seeds,
        "test_accuracy": spread(recipe_acc),
        "test_macro_f1": spread(of("recipe", "test_macro_f1")),
        "seconds": spread(recipe_s),
        "test_samples": per_seed[seeds[0]]["recipe"]["test_samples"],
        "epochs": args.epochs,
        "hand_written_test_accuracy": spread(hand_acc),
        "hand_written_seconds": spread(hand_s),
        "hand_written_params": per_seed[seeds[0]]["hand_written"]["params"],
        "recipe_minus_hand_written": spread(gain),
        "seeds_favouring_the_recipe": sum(g > 0 for g in gain),
        "time_ratio_recipe_over_hand_written": spread(
            [r / h for r, h in zip(recipe_s, hand_s, strict=True)]
        ),  # fmt: skip
        "target_accuracy": TARGET_ACCURACY,
        "time_limit_seconds": TIME_LIMIT_S,
        "meets_target": bool(
            statistics.median(recipe_acc) >= TARGET_ACCURACY and max(recipe_s) <= TIME_LIMIT_S
        ),  # fmt: skip
        "per_seed": per_seed,
        "total_seconds": round(time.perf_counter() - began, 1),
        "protocol": {
            "seeds": seeds,
            "seed_draws": "seed_everything / torch.manual_seed and the DataModule's split seed",
            "selection": "val: each side's best epoch by validation accuracy (5,400 images held "
            "out of the 60k training images by the split's seed); no other settings tried",
            "selection_runs_per_side": 1,
            "budget": f"{args.epochs} epochs each, batch 128 (the same steps); wall seconds of "
            "each process reported (the recipe trains in bf16-mixed with channels_last, the "
            "hand-written loop in fp32)",
            "test_reads": "once per side per seed, the full 10k test set",
            "timing": "the sides alternate which runs first by seed; medians and per-seed ratios",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_seed"}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
