"""Tuning benchmark: what ``lifecycle tune`` buys and what pruning and a second worker save, all
through the real commands (``python -m lifecycle tune ...`` subprocesses, wall time).

On a Fashion-MNIST subset (``--images`` training images, a seeded stratified subset drawn by
``data.init_args.seed``; a 2,000-image validation split held out first; the test split read only
by the final tests), the main recipe (``recipes/fashion_mnist/classify.yaml``: the VGG-style CNN,
OneCycle schedule) trained ``--epochs`` epochs per trial, a sweep of ``--trials`` trials over the
optimizer (plain SGD, SGD with Nesterov momentum, Adagrad, RMSprop, Adam, AdamW), its learning
rate (log 1e-4..0.3, also the one-cycle peak) and weight decay (log 1e-6..0.1), the one-cycle
schedule's momentum cycling off for all (Adagrad has no momentum): the search of
``recipes/fashion_mnist/sweep.yaml``. Per seed (the sampler's seed, ``seed_everything`` and the
subset's draw):

- **pruning**: the sweep with the median pruner against the same sweep (same trials, sampler and
  seed) with none: ``pruned_best_val`` vs ``unpruned_best_val`` (goal: gap <= 0.003) and
  ``pruned_time_ratio`` (pruned wall over unpruned wall, goal <= 0.5);
- **workers**: the unpruned sweep with ``--workers 2`` against the one-worker run above, on one
  SQLite study each: ``two_worker_wall_ratio`` (goal <= 0.65 on 2 cores), and whether each study
  ended with exactly ``--trials`` trials, numbered 0..N-1, no value drawn twice;
- **tuned against defaults**: the best trial of the unpruned sweep (chosen on validation) tested
  once, against the recipe's hand-set settings (AdamW, lr 0.003, weight decay 0.05) trained the
  same epochs on the same images and tested once: ``tuned_test_acc``, ``default_test_acc``;
- **learning-rate finder**: ``lifecycle tune lr`` on the recipe (AdamW) beside the best AdamW
  learning rate of the sweep: ``lr_find_suggestion``, ``sweep_best_adamw_lr``;
- **the optimizer comparison**: the best validation accuracy each optimizer reached in the
  unpruned sweep (and how many trials TPE gave it), medians over seeds, drawn as
  ``benchmarks/results/tuning_optimizers.png``.

Accuracy figures are medians over the seeds with min and max. Timings alternate the sides (seed
0 runs unpruned first, seed 1 pruned first, ...; the same for one and two workers) and quote
medians of per-seed ratios. Nothing else should run meanwhile. The commands run from a copy of
``lifecycle/`` and ``recipes/`` taken at the start (edits of the checkout meanwhile change
nothing).

    python benchmarks/tuning.py            # 3 seeds, writes benchmarks/results/tuning.json
    python benchmarks/tuning.py --quick --out /tmp/tuning_quick.json   # smoke, a few minutes
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, snapshot_code, spread  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RECIPE = "recipes/fashion_mnist/classify.yaml"
SWEEP = "recipes/fashion_mnist/sweep.yaml"
OPTIMIZER = "model.init_args.optimizer"
LR = "model.init_args.optimizer.init_args.lr"
VAL_IMAGES = 2000
TRAIN_IMAGES = 60_000  # before the validation split


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Commands:
    """``python -m lifecycle ...`` in ``code`` (a snapshot), each logged to ``<work>/logs``."""

    def __init__(self, work: Path, code: Path):
        self.work, self.code = work, code
        (work / "logs").mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
        self.env.pop("OMP_NUM_THREADS", None)

    def run(self, label: str, args: list[str]) -> float:
        logfile = self.work / "logs" / f"{label}.log"
        log(f"lifecycle {' '.join(args[:3])} ... ({label}; log {logfile})")
        began = time.perf_counter()
        with open(logfile, "w") as out:
            done = subprocess.run([sys.executable, "-m", "lifecycle", *args], cwd=self.code,
                                  env=self.env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            tail = "\n".join(logfile.read_text().splitlines()[-30:])
            raise RuntimeError(f"{label} failed ({done.returncode}):\n{tail}")
        log(f"  {seconds:.0f} s")
        return seconds


def recipe_args(mode: dict, seed: int) -> list[str]:
    return [
        "--config", RECIPE,
        f"--seed_everything={seed}",
        f"--data.init_args.seed={seed}",
        f"--data.init_args.val_fraction={VAL_IMAGES / TRAIN_IMAGES}",
        f"--data.init_args.train_subset={mode['images']}",
        f"--trainer.max_epochs={mode['epochs']}",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.num_workers=0",
    ]  # fmt: skip


def sweep_file(work: Path, mode: dict, seed: int, pruner: str) -> Path:
    spec = yaml.safe_load((REPO / SWEEP).read_text())
    spec.update(trials=mode["trials"], seed=seed, pruner=pruner)
    path = work / "sweeps" / f"seed{seed}_{pruner}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def study_check(root: Path, trials: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=root.name, storage=f"sqlite:///{root / 'study.db'}")
    found = study.get_trials(deepcopy=False)
    draws = [json.dumps(t.params, sort_keys=True) for t in found]
    return {
        "trials": len(found),
        "numbers_in_order": [t.number for t in found] == list(range(trials)),
        "states": {
            s: sum(t.state.name.lower() == s for t in found) for s in ("complete", "pruned", "fail")
        },  # fmt: skip
        "repeated_draws": len(draws) - len(set(draws)),
        "exact": len(found) == trials and len(set(draws)) == len(draws),
    }


def sweep(cmd: Commands, mode: dict, seed: int, pruner: str, workers: int) -> dict:
    label = f"seed{seed}_{pruner}_{workers}w"
    root = cmd.work / "sweeps" / label
    shutil.rmtree(root, ignore_errors=True)
    spec = sweep_file(cmd.work, mode, seed, pruner)
    seconds = cmd.run(label, ["tune", "sweep", *recipe_args(mode, seed), "--sweep", str(spec),
                              "--root", str(root), "--workers", str(workers)])  # fmt: skip
    summary = json.loads((root / "summary.json").read_text())
    with open(root / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    return {"seconds": round(seconds, 1), "best": summary["best"], "states": summary["states"],
            "best_by_choice": summary["best_by_choice"].get(OPTIMIZER, {}),
            "trials_by_choice": {c: sum(r[OPTIMIZER] == c for r in rows)
                                 for c in {r[OPTIMIZER] for r in rows}},
            "adamw_lrs": sorted(((float(r["value"]), float(r[LR])) for r in rows
                                 if r[OPTIMIZER] == "adamw" and r["state"] == "complete"),
                                reverse=True),
            "study": study_check(root, mode["trials"]), "root": str(root)}  # fmt: skip


def test_accuracy(folder: Path) -> float:
    return float(json.loads((folder / "metrics.json").read_text())["metrics"]["accuracy"])


def tuned_and_default(cmd: Commands, mode: dict, seed: int, best: dict) -> dict:
    """The best trial's checkpoint tested once; the recipe's defaults trained and tested once."""
    out = cmd.work / "tests" / f"seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    trial = Path(best["folder"])
    sweep_root = trial.parent.parent
    (checkpoint,) = sorted(trial.glob("checkpoints/best-*.ckpt"))
    cmd.run(f"seed{seed}_tuned_test", ["test", *recipe_args(mode, seed), "--config",
            str(sweep_root / "best.yaml"), f"--ckpt_path={checkpoint}",
            f"--trainer.default_root_dir={out}", "--run_name=tuned", "--run_version=0"])  # fmt: skip
    cmd.run(f"seed{seed}_default_fit", ["fit", *recipe_args(mode, seed), "--test_after_fit=true",
            f"--trainer.default_root_dir={out}", "--run_name=default", "--run_version=0"])  # fmt: skip
    return {"tuned_test_acc": test_accuracy(out / "tuned" / "version_0"),
            "default_test_acc": test_accuracy(out / "default" / "version_0")}  # fmt: skip


def plot_optimizers(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    medians = [table[n]["best_val"]["median"] for n in names]
    low = [m - table[n]["best_val"]["min"] for n, m in zip(names, medians, strict=True)]
    high = [table[n]["best_val"]["max"] - m for n, m in zip(names, medians, strict=True)]
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.bar(names, medians, yerr=[low, high], capsize=4, color="tab:blue")
    floor = min(table[n]["best_val"]["min"] for n in names)
    ax.set_ylim(max(0.0, floor - 0.05), 1.0)
    ax.set_ylabel("best validation accuracy in the sweep")
    ax.set_title("optimizers on Fashion-MNIST (median of seeds, min-max bars)")
    for i, n in enumerate(names):
        ax.text(i, medians[i] + 0.005, f"{medians[i]:.3f}\n{table[n]['trials']} trials",
                ha="center", va="bottom", fontsize=8)  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def code_version() -> dict:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    return {"git_commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "lifecycle", "recipes"))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, tiny sweeps")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "tuning.json")
    args = parser.parse_args()
    mode = {"seeds": [0], "trials": 4, "images": 2000, "epochs": 2} if args.quick else \
        {"seeds": [0, 1, 2], "trials": 16, "images": 8000, "epochs": 4}  # fmt: skip
    for key in ("seeds", "trials", "images", "epochs"):
        if getattr(args, key) is not None:
            mode[key] = getattr(args, key)
    work = args.work or REPO / "runs" / "benchmarks" / ("tuning-quick" if args.quick else "tuning")
    work.mkdir(parents=True, exist_ok=True)
    code = snapshot_code(REPO, ("lifecycle", "recipes"))
    cmd = Commands(work, code)
    began = time.perf_counter()
    per_seed: dict[int, dict] = {}
    try:
        for index, seed in enumerate(mode["seeds"]):
            # alternate which side runs first: even seeds unpruned (one worker) first, odd
            # seeds the two-worker and the pruned sweeps before the one-worker unpruned one
            order = [("none", 1), ("median", 1), ("none", 2)]
            runs = {}
            for pruner, workers in order if index % 2 == 0 else order[::-1]:
                runs[pruner, workers] = sweep(cmd, mode, seed, pruner, workers)
            sides, two = {"none": runs["none", 1], "median": runs["median", 1]}, runs["none", 2]
            tests = tuned_and_default(cmd, mode, seed, sides["none"]["best"])
            per_seed[seed] = {"unpruned": sides["none"], "pruned": sides["median"],
                              "two_workers": two, **tests}  # fmt: skip
        lr_root = work / "lr_find"
        shutil.rmtree(lr_root, ignore_errors=True)
        cmd.run("lr_find", ["tune", "lr", *recipe_args(mode, mode["seeds"][0]), "--root",
                            str(lr_root)])  # fmt: skip
        found = json.loads((lr_root / "lr.json").read_text())
        suggestion = found["suggestion"]
        lightning_suggestion = found.get("lightning_suggestion", suggestion)
    finally:
        shutil.rmtree(code, ignore_errors=True)
    seeds = mode["seeds"]
    unpruned = [per_seed[s]["unpruned"]["best"]["value"] for s in seeds]
    pruned = [per_seed[s]["pruned"]["best"]["value"] for s in seeds]
    gap = [u - p for u, p in zip(unpruned, pruned, strict=True)]
    time_ratio = [per_seed[s]["pruned"]["seconds"] / per_seed[s]["unpruned"]["seconds"]
                  for s in seeds]  # fmt: skip
    worker_ratio = [per_seed[s]["two_workers"]["seconds"] / per_seed[s]["unpruned"]["seconds"]
                    for s in seeds]  # fmt: skip
    names = ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"]
    table = {}
    for name in names:
        reached = [per_seed[s]["unpruned"]["best_by_choice"].get(name) for s in seeds]
        reached = [r for r in reached if r is not None]
        if reached:
            table[name] = {"best_val": spread(reached), "seeds_with_a_complete_trial": len(reached),
                           "trials": sum(per_seed[s]["unpruned"]["trials_by_choice"].get(name, 0)
                                         for s in seeds)}  # fmt: skip
    adamw = [lrs[0][1] for s in seeds if (lrs := per_seed[s]["unpruned"]["adamw_lrs"])]
    plot = args.out.with_name(args.out.stem + "_optimizers.png")
    if table:
        plot_optimizers(table, plot)
    result = {
        "mode": "quick" if args.quick else "full",
        "seeds": seeds,
        "unpruned_best_val": spread(unpruned),
        "pruned_best_val": spread(pruned),
        "pruned_gap": spread(gap),
        "pruned_time_ratio": spread(time_ratio),
        "two_worker_wall_ratio": spread(worker_ratio),
        "studies_exact": all(
            per_seed[s][k]["study"]["exact"]
            for s in seeds
            for k in ("unpruned", "pruned", "two_workers")
        ),  # fmt: skip
        "tuned_test_acc": spread([per_seed[s]["tuned_test_acc"] for s in seeds]),
        "default_test_acc": spread([per_seed[s]["default_test_acc"] for s in seeds]),
        "tuned_gain": spread(
            [per_seed[s]["tuned_test_acc"] - per_seed[s]["default_test_acc"] for s in seeds]
        ),  # fmt: skip
        "lr_find_suggestion": suggestion,
        "lr_find_lightning_suggestion": lightning_suggestion,
        "sweep_best_adamw_lr": spread(adamw) if adamw else None,
        "optimizers": table,
        "optimizer_plot": str(plot.relative_to(REPO)) if plot.is_relative_to(REPO) else str(plot),
        "met": {
            "pruned_gap": statistics.median(gap) <= 0.003,
            "pruned_time_ratio": statistics.median(time_ratio) <= 0.5,
            "two_worker_wall_ratio": statistics.median(worker_ratio) <= 0.65,
        },
        "per_seed": per_seed,
        "code": code_version(),
        "total_seconds": round(time.perf_counter() - began, 1),
        "protocol": {
            "dataset": f"Fashion-MNIST: {mode['images']} training images (a stratified subset "
            f"drawn by the seed), {VAL_IMAGES} validation images held out first, the 10,000 "
            "test images read only by the final tests",
            "recipe": f"{RECIPE}, {mode['epochs']} epochs per trial and per final run",
            "search": f"{SWEEP}: optimizer (sgd, momentum, adagrad, rmsprop, adam, adamw), lr "
            "(log 1e-4..0.3, also OneCycle's max_lr), weight decay (log 1e-6..0.1)",
            "seeds": seeds,
            "seed_draws": "the sampler's seed, seed_everything and data.init_args.seed",
            "selection": "TPE (Optuna's default sampler), by validation accuracy only",
            "selection_runs_per_side": {
                "pruned": mode["trials"],
                "unpruned": mode["trials"],
                "two_workers": mode["trials"],
                "default": 0,
            },  # fmt: skip
            "budget": f"{mode['trials']} trials per sweep; the defaults are the recipe's "
            "hand-set values, no selection",
            "test_reads": "once per side per seed: the unpruned sweep's best trial's best "
            "checkpoint, and the default run's best checkpoint",
            "timing": "wall seconds of each `lifecycle tune sweep` process; pruned and "
            "unpruned alternate which runs first by seed; ratios are per seed, quoted as "
            "medians",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**result, "machine": machine()}, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_seed"}, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
