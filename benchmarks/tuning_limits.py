"""Why two of ``benchmarks/tuning.py``'s time goals are short on this machine, measured.

Two parts, written to ``benchmarks/results/tuning_limits.json``:

- **thread scaling** (``two_worker_wall_ratio``, goal <= 0.65 on 2 cores): one trial of the
  tuning benchmark (the main recipe, ``--images`` training images, ``--epochs`` epochs, 2,000
  validation images) run as ``lifecycle fit`` with 2 threads alone, against two such trials at
  once with 1 thread each (what ``--workers 2`` gives each worker), alternating, ``--reps``
  times. The start-up of a process (imports and parsing, measured by ``--print_config`` runs)
  is taken off, as the sweep's in-process trials do not pay it. ``two_worker_bound`` is
  (two at once) / (2 x one alone with 2 threads): the best wall ratio two workers can reach
  when a trial already uses both cores, before any sweep overhead.
- **pruner replay** (``pruned_time_ratio``, goal <= 0.5): the validation curves of every trial
  of the unpruned sweeps of a finished ``benchmarks/tuning.py`` run (``--from``), replayed in
  trial order through Optuna's pruners: the share of the unpruned sweep's epochs each would
  have run and how far its best complete trial falls below the sweep's best. A replay keeps
  the unpruned sweep's trials (the sampler does not react to the pruning), so it prices the
  pruners on the same trials; the real pruned sweep is the one in ``tuning.json``.

    python benchmarks/tuning_limits.py   # about 6 minutes on 2 cores, after benchmarks/tuning.py
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))  # before benchmarks/: its lifecycle.py is not the package
from common import RESULTS, machine  # noqa: E402

RECIPE = "recipes/fashion_mnist/classify.yaml"
METRIC = "val/accuracy"


def trial_args(images: int, epochs: int, root: Path) -> list[str]:
    return [
        "fit", "--config", RECIPE, "--seed_everything=0", "--data.init_args.seed=0",
        f"--data.init_args.val_fraction={2000 / 60_000}", f"--data.init_args.train_subset={images}",
        f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false",
        "--data.init_args.num_workers=0", f"--trainer.default_root_dir={root}",
    ]  # fmt: skip


def start(args: list[str], threads: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "lifecycle", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def timed(*processes: subprocess.Popen) -> float:
    began = time.perf_counter()
    for p in processes:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"a run failed ({p.returncode}): {err[-2000:]}")
    return time.perf_counter() - began


def thread_scaling(images: int, epochs: int, reps: int, work: Path) -> dict:
    alone, together, startup = [], [], []
    for rep in range(reps):
        steps = ["alone", "together"] if rep % 2 == 0 else ["together", "alone"]
        for step in steps:
            if step == "alone":
                alone.append(timed(start(trial_args(images, epochs, work / "alone"), 2)))
            else:
                pair = [start(trial_args(images, epochs, work / f"pair{i}"), 1) for i in (0, 1)]
                together.append(timed(*pair))
        startup.append(timed(start([*trial_args(images, epochs, work), "--print_config"], 2)))
    s = statistics.median(startup)
    one, two = statistics.median(alone) - s, statistics.median(together) - s
    return {
        "trial": f"{RECIPE}, {images} training images, {epochs} epochs, 2,000 validation images",
        "reps": reps,
        "one_trial_two_threads_s": [round(v, 1) for v in alone],
        "two_trials_one_thread_each_s": [round(v, 1) for v in together],
        "process_startup_s": [round(v, 1) for v in startup],
        "trial_two_threads_s": round(one, 1),
        "two_trials_at_once_s": round(two, 1),
        "two_worker_bound": round(two / (2 * one), 3),
        "note": "a trial gains from its second thread nearly what a second worker would: the "
        "bound is the ratio two workers reach on trials alone, before any sweep overhead",
    }


def curve(folder: Path) -> list[float]:
    with open(folder / "metrics.csv") as handle:
        return [float(r[METRIC]) for r in csv.DictReader(handle) if r.get(METRIC)]


def pruners() -> dict:
    import optuna

    from lifecycle.tuning.pruning import build_pruner

    return {
        "median (the sweep's)": lambda: build_pruner("median"),
        "successive_halving (eta 3)": lambda: build_pruner("successive_halving"),
        "successive_halving (eta 4)": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=4
        ),
        "hyperband (eta 3)": lambda: build_pruner("hyperband"),
        "percentile 25": lambda: optuna.pruners.PercentilePruner(
            25.0, n_startup_trials=2, n_warmup_steps=1
        ),
    }


def replay(curves: list[list[float]], make) -> tuple[float, float]:
    """(share of the epochs run, best complete value) with ``make()``'s pruner."""
    import optuna

    study = optuna.create_study(direction="maximize", pruner=make())
    ran, best = 0, float("-inf")
    for values in curves:
        trial, pruned = study.ask(), False
        for step, value in enumerate(values, 1):
            trial.report(value, step)
            ran += 1
            if trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, max(values))
            best = max(best, max(values))
    return ran / sum(len(v) for v in curves), best


def pruner_replay(result: Path) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    report = json.loads(result.read_text())
    per_seed = {}
    for seed, sides in report["per_seed"].items():
        root = Path(sides["unpruned"]["root"])
        with open(root / "trials.csv") as handle:
            folders = [Path(r["folder"]) for r in csv.DictReader(handle)]
        curves = [curve(f) for f in folders]
        true_best = max(max(c) for c in curves)
        per_seed[seed] = {}
        for name, make in pruners().items():
            share, best = replay(curves, make)
            per_seed[seed][name] = {"epoch_share": round(share, 3),
                                    "gap": round(true_best - best, 4)}  # fmt: skip
    table = {}
    for name in pruners():
        shares = [per_seed[s][name]["epoch_share"] for s in per_seed]
        gaps = [per_seed[s][name]["gap"] for s in per_seed]
        table[name] = {"epoch_share": {"median": statistics.median(shares), "min": min(shares),
                                       "max": max(shares)},
                       "gap": {"median": statistics.median(gaps), "min": min(gaps),
                               "max": max(gaps)}}  # fmt: skip
    epochs = len(curve(folders[0]))
    return {
        "from": str(result.relative_to(REPO)) if result.is_relative_to(REPO) else str(result),
        "measured_pruned_time_ratio": report["pruned_time_ratio"],
        "epochs_per_trial": epochs,
        "floor": f"a pruned trial runs at least 1 of its {epochs} epochs (validation comes at "
        "each epoch's end) and its start-up; a pruner that keeps the best trial completes a few",
        "pruners": table,
        "per_seed": per_seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, default=RESULTS / "tuning.json")
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "benchmarks" / "tuning_limits")
    parser.add_argument("--out", type=Path, default=RESULTS / "tuning_limits.json")
    args = parser.parse_args()
    began = time.perf_counter()
    result = {
        "pruner_replay": pruner_replay(args.source),
        "thread_scaling": thread_scaling(args.images, args.epochs, args.reps, args.work),
    }
    result["total_seconds"] = round(time.perf_counter() - began, 1)
    result["protocol"] = {
        "seeds": sorted(result["pruner_replay"]["per_seed"]),
        "selection": "none: no setting is chosen here; the replay reuses the unpruned sweeps' "
        "trials (chosen by TPE on validation) and reads no test split",
        "selection_runs_per_side": 0,
        "budget": f"thread scaling: {args.reps} alternating repetitions of each side; replay: "
        "the recorded validation curves",
        "timing": "wall seconds of `lifecycle fit` processes, medians, process start-up taken off",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
