"""Lifecycle benchmark: what joining the stages buys, and what the pipeline runner's cache and
resume are worth, all measured with the real ``lifecycle run`` (``python -m lifecycle run``
subprocesses, wall and CPU time).

**What joining buys (the headline).** Fashion-MNIST with 600 labels (1%, a seeded stratified
subset: ``data.init_args.seed`` draws it) and the other 58,400 training images unlabelled, plus
a labelled validation split of 1,000 images (``val_fraction`` 1/60, held out by the same seed
before the subset is drawn) that both sides use for every choice. Per seed:

- the **lifecycle** side, one pipeline: SimCLR pretraining on the training images, labels unused
  (``recipes/fashion_mnist/pretrain_simclr.yaml``; seed-independent, so one pretraining serves
  every seed through the pipeline's cache) -> fine-tuning on the 600 labels
  (``finetune_simclr.yaml``) -> distillation into the student (``distill.yaml``'s 25k-parameter
  CNN) on the 600 labels plus the 58,400 unlabelled images (SimCLRv2's recipe) -> ``select``
  (``lifecycle validate`` of the student's best checkpoint on the validation split) -> ``test``;
- the **scratch** side, the same student network trained on the 600 labels alone
  (``classify.yaml`` with the student's network, ``medium`` augmentation and batch 64, as the
  fine-tuning recipe trains) -> ``select`` -> ``test``.

Each side has the same number of selection runs (``--lrs``: 3 learning rates of the student's
training: the distillation's on the lifecycle side, the scratch training's on the other), each
run's best checkpoint kept by validation accuracy and the setting chosen by its validation
accuracy (the ``select`` stage); only the chosen run's ``test`` stage runs (``--until select``
for the others), so the test images are read once per side per seed, for the final student
(and, for information, once for the fine-tuned teacher: ``teacher_test``; no choice uses it).
Keys: ``final_acc``, ``scratch_acc``, ``gain`` (per seed ``final - scratch``; goal >= 0.05),
``finetune_acc`` (the teacher), ``distill_val_acc``, ``scratch_val_acc``, ... each as
``{median, min, max, per_seed}``.

**Caching.** ``first_run_seconds``: seed 0's first pipeline run (pretrain, fine-tune, distil,
select); ``cached_rerun_seconds``: the same command again (goal <= 0.05 of the first);
``rerun_after_change``: the stages that ran after changing only the distillation temperature
(goal: ``distill`` and its descendants, here ``select``; ``test`` is left out by ``--until``).

**Resume.** ``killed_resume_identical``: seed 0's fine-tune -> distil -> select in a folder of
its own (the pretrained backbone given by path), SIGKILLed (its process group) once the fine-tune
has written a checkpoint, run again with the same command (the fine-tune resumes), its last
stage's lineage ``metrics`` compared with those of the uninterrupted run of the same stages in
the main pipeline.

Nothing else should run meanwhile: the timings are shared-CPU timings otherwise (each pipeline
run's CPU time is recorded beside its wall time). Every ``lifecycle run`` runs from a copy of
``lifecycle/`` and ``recipes/`` taken when the script starts (a temporary folder outside the git
checkout, removed at the end; ``--live-code`` runs the checkout itself): a stage's fingerprint
holds the hash of the package's source, so an edit of ``lifecycle/`` during the run would make
every later stage run again instead of being cached (any stage that still ran for a code change
is listed in ``code_changed_during_run``). The copy's source hash is ``code.source_hash``.

    python benchmarks/lifecycle.py   # full: 3 seeds, writes benchmarks/results/lifecycle.json
    python benchmarks/lifecycle.py --quick --out /tmp/lifecycle_quick.json   # smoke, a few minutes

The pipelines (YAML, generated from the stage recipes with overrides) and their run folders go
under ``--work`` (default ``runs/benchmarks/lifecycle``, or ``-quick``); a second run of the
script reuses every finished stage from there (``--fresh`` deletes it first).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, spread, write_result  # noqa: E402
from common import snapshot_code as common_snapshot  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CODE_FOLDERS = ("lifecycle", "recipes")  # what the snapshot the pipelines run from holds
RECIPES = Path("recipes/fashion_mnist")
PRETRAIN, FINETUNE = RECIPES / "pretrain_simclr.yaml", RECIPES / "finetune_simclr.yaml"
DISTILL, CLASSIFY = RECIPES / "distill.yaml", RECIPES / "classify.yaml"
TRAIN_IMAGES = 60_000  # Fashion-MNIST's training split, before the validation split

# the two modes; everything else (recipes, sides, protocol) is the same
MODES: dict[str, dict[str, Any]] = {
    "full": {
        "seeds": [0, 1, 2],
        "labels": 600,
        "val_images": 1000,
        "lrs": [1e-3, 3e-3, 1e-2],
        "pretrain": {},  # the recipe as it is: 14 epochs on 58,800 images
        "finetune": {"trainer.max_epochs": 60, "trainer.check_val_every_n_epoch": 10},
        # 20 of the recipe's 30 epochs (about 9,000 steps on 59,000 images): the two hours'
        # budget holds 11 distillation runs (9 selection runs, the changed temperature, resume)
        "distill": {"trainer.max_epochs": 20},
        "scratch": {"trainer.max_epochs": 100, "trainer.check_val_every_n_epoch": 5},
    },
    "quick": {
        "seeds": [0],
        "labels": 600,
        "val_images": 1000,
        "lrs": [1e-3, 3e-3, 1e-2],
        "pretrain": {
            "data.init_args.train_subset": 2048,
            "trainer.max_epochs": 1,
            "trainer.limit_val_batches": 2,
        },
        "finetune": {"trainer.max_epochs": 8, "trainer.check_val_every_n_epoch": 2},
        "distill": {"trainer.max_epochs": 1, "trainer.limit_train_batches": 60},
        "scratch": {"trainer.max_epochs": 8, "trainer.check_val_every_n_epoch": 2},
    },
}
CHANGED_TEMPERATURE = 2.0  # the distillation recipe's is 4.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@functools.lru_cache(maxsize=1)
def _student_network() -> str:
    recipe = yaml.safe_load((REPO / DISTILL).read_text())
    return json.dumps(recipe["model"]["init_args"]["student"])


def student_network() -> dict:
    """The final student, exactly as ``distill.yaml`` builds it (both sides train this; read once,
    when the script starts, as the code snapshot is taken)."""
    return json.loads(_student_network())


# ------------------------------------------------------------------------------ pipelines
def data_overrides(mode: dict, seed: int) -> dict:
    """The labelled subset, the validation split and the seed every supervised stage shares."""
    return {
        "seed_everything": seed,
        "data.init_args.seed": seed,
        "data.init_args.train_subset": mode["labels"],
        "data.init_args.val_fraction": mode["val_images"] / TRAIN_IMAGES,
    }


def student_eval(mode: dict, seed: int, command: str, source: str) -> dict:
    """A ``validate``/``test`` stage of a student's best checkpoint (the same for both sides:
    ``classify.yaml`` holding the student's network, the checkpoint's own normalization)."""
    return {
        "command": command,
        "config": str(CLASSIFY),
        "overrides": {
            **data_overrides(mode, seed),
            "model.init_args.backbone": student_network(),
            "trainer.enable_progress_bar": False,
        },
        "inputs": {"ckpt_path": f"{source}.best_checkpoint"},
    }


def lifecycle_pipeline(
    mode: dict, seed: int, lr: float, root: Path, temperature: float | None = None,
    backbone: str | None = None,
) -> dict:  # fmt: skip
    """Pretrain -> fine-tune -> distil -> select -> test (-> teacher_test). With ``backbone`` (a
    pretrained folder) the pretraining stage is left out and the fine-tune reads that folder."""
    quiet = {"trainer.enable_progress_bar": False}
    finetune = {
        "command": "fit",
        "config": str(FINETUNE),
        "overrides": {
            **data_overrides(mode, seed),
            **mode["finetune"],
            **quiet,
            "test_after_fit": False,
            "model.init_args.monitor": "val/accuracy",
        },
        "inputs": {"model.init_args.backbone": "pretrain.backbone"},
    }
    distill = {
        "command": "fit",
        "config": str(DISTILL),
        "overrides": {
            **data_overrides(mode, seed),
            "data.init_args.unlabeled_rest": True,
            **mode["distill"],
            **quiet,
            "test_after_fit": False,
            "model.init_args.monitor": "val/accuracy",
            "model.init_args.optimizer.init_args.lr": lr,
            "model.init_args.scheduler.init_args.max_lr": lr,
        },
        "inputs": {"model.init_args.teacher": "finetune.best_checkpoint"},
    }
    if temperature is not None:
        distill["overrides"]["model.init_args.temperature"] = temperature
    stages: dict[str, dict] = {}
    if backbone is None:
        stages["pretrain"] = {
            "command": "fit",
            "config": str(PRETRAIN),
            "overrides": {**mode["pretrain"], **quiet},
        }
    else:
        finetune["inputs"] = {}
        finetune["overrides"]["model.init_args.backbone.init_args.path"] = backbone
    stages["finetune"], stages["distill"] = finetune, distill
    stages["select"] = student_eval(mode, seed, "validate", "distill")
    if backbone is None:
        stages["test"] = student_eval(mode, seed, "test", "distill")
        stages["teacher_test"] = {
            "command": "test",
            "config": str(FINETUNE),
            "overrides": {**data_overrides(mode, seed), **quiet},
            "inputs": {
                "model.init_args.backbone": "pretrain.backbone",
                "ckpt_path": "finetune.best_checkpoint",
            },
        }
    return {"root": str(root), "stages": stages}


def scratch_pipeline(mode: dict, seed: int, lr: float, root: Path) -> dict:
    """The student on the labels alone -> select -> test."""
    scratch = {
        "command": "fit",
        "config": str(CLASSIFY),
        "overrides": {
            **data_overrides(mode, seed),
            **mode["scratch"],
            "trainer.enable_progress_bar": False,
            "test_after_fit": False,
            "model.init_args.backbone": student_network(),
            "model.init_args.monitor": "val/accuracy",
            "model.init_args.optimizer.init_args.lr": lr,
            "model.init_args.scheduler.init_args.max_lr": lr,
            # the fine-tuning recipe's data settings for 600 labels
            "data.init_args.train_transforms": "medium",
            "data.init_args.batch_size": 64,
        },
    }
    return {
        "root": str(root),
        "stages": {
            "scratch": scratch,
            "select": student_eval(mode, seed, "validate", "scratch"),
            "test": student_eval(mode, seed, "test", "scratch"),
        },
    }


# ------------------------------------------------------------------------------ running
def snapshot_code() -> Path:
    """A copy of ``lifecycle/`` and ``recipes/`` outside the checkout (see ``common``)."""
    return common_snapshot(REPO, CODE_FOLDERS)


class Runner:
    """Writes pipeline recipes into the work folder and runs ``python -m lifecycle run`` on them
    (in ``code``: the checkout or a snapshot of it), timing each run (wall and CPU) and logging its
    output to ``<work>/logs``."""

    def __init__(self, work: Path, code: Path = REPO):
        self.work, self.code = work, code
        self.runs: list[dict] = []  # what the JSON shows of each run
        self.done: list[dict] = []  # each run as `run` returned it
        (work / "pipelines").mkdir(parents=True, exist_ok=True)
        (work / "logs").mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}

    def recipe(self, name: str, pipeline: dict) -> Path:
        path = self.work / "pipelines" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
        return path

    def command(self, recipe: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "lifecycle", "run", "--config", str(recipe), *extra]

    def run(self, name: str, recipe: Path, *extra: str, label: str | None = None) -> dict:
        """Run the pipeline to its end; its wall and CPU seconds and what each stage did."""
        label = label or name
        logfile = self.work / "logs" / f"{label}.log"
        log(f"lifecycle run {recipe.name} {' '.join(extra)}  (log: {logfile})")
        cpu0, wall0 = _children_cpu(), time.perf_counter()
        with open(logfile, "w") as out:
            done = subprocess.run(
                self.command(recipe, *extra), cwd=self.code, env=self.env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
        root = Path(yaml.safe_load(recipe.read_text())["root"])
        if done.returncode != 0:
            tail = "\n".join(logfile.read_text().splitlines()[-25:])
            raise RuntimeError(f"`lifecycle run` on {recipe} failed ({done.returncode}):\n{tail}")
        info = read_pipeline(root)
        entry = {"label": label, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                 "actions": {s: v["action"] for s, v in info["stages"].items()},
                 "reasons": {s: v["reason"] for s, v in info["stages"].items()}}  # fmt: skip
        self.runs.append(entry)
        ran = [s for s, a in entry["actions"].items() if a in ("run", "resume")]
        log(f"  done in {wall:.0f} s wall, {cpu:.0f} s CPU; ran: {', '.join(ran) or 'nothing'}")
        # pipeline.json is the folder's latest run's: what this run used is kept here
        return {**entry, "info": info, "root": root, "recipe": recipe, "args": list(extra)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_pipeline(root: Path) -> dict:
    return json.loads((root / "pipeline.json").read_text())


def record(root: Path, info: dict, stage: str) -> dict:
    """The lineage record of ``stage`` in the version a pipeline run used."""
    version = info["stages"][stage]["version"]
    return json.loads((root / stage / f"version_{version}" / "lineage.json").read_text())


def metric(rec: dict, *names: str) -> float | None:
    metrics = rec.get("metrics") or {}
    for name in names:
        if name in metrics:
            return round(float(metrics[name]), 4)
    return None


# ------------------------------------------------------------------------------ the parts
def one_side(runner: Runner, side: str, mode: dict, seed: int, build) -> dict:
    """The selection runs of one side (``--until select``), the choice on validation accuracy,
    and the chosen run's full pipeline (its test stage runs, everything else is cached)."""
    rows, recipes = [], {}
    for lr in mode["lrs"]:
        name = f"{side}_seed{seed}_lr{lr:g}"
        recipes[lr] = runner.recipe(name, build(lr))
        done = runner.run(name, recipes[lr], "--until", "select")
        runner.done.append(done)
        select = record(done["root"], done["info"], "select")
        fit_stage = "distill" if side == "lifecycle" else "scratch"
        fitted = record(done["root"], done["info"], fit_stage)
        rows.append({
            "lr": lr,
            "val_acc": metric(select, "val/accuracy", "val/acc"),
            "fit_seconds": fitted.get("seconds"),
            "version": done["info"]["stages"][fit_stage]["version"],
            "run": {k: done[k] for k in ("wall_seconds", "cpu_seconds", "actions")},
        })  # fmt: skip
        log(f"  {side} seed {seed} lr {lr:g}: val acc {rows[-1]['val_acc']}")
    chosen = max(rows, key=lambda r: r["val_acc"] or 0.0)
    name = f"{side}_seed{seed}_lr{chosen['lr']:g}"
    done = runner.run(name, recipes[chosen["lr"]], label=f"{name}_test")
    test = record(done["root"], done["info"], "test")
    out = {
        "selection": rows,
        "chosen_lr": chosen["lr"],
        "val_acc": chosen["val_acc"],
        "test_acc": metric(test, "test/accuracy", "test/acc"),
        "final_run": {k: done[k] for k in ("wall_seconds", "cpu_seconds", "actions")},
    }
    if side == "lifecycle":
        teacher = record(done["root"], done["info"], "teacher_test")
        finetune = record(done["root"], done["info"], "finetune")
        pretrain = record(done["root"], done["info"], "pretrain")
        out["finetune_acc"] = metric(teacher, "test/accuracy", "test/acc")
        out["finetune_val_acc"] = _best_val(done["root"], done["info"], "finetune")
        out["finetune_seconds"] = finetune.get("seconds")
        out["pretrain"] = {
            "version": done["info"]["stages"]["pretrain"]["version"],
            "fingerprint": pretrain.get("fingerprint"),
            "seconds": pretrain.get("seconds"),
            "metrics": pretrain.get("metrics"),
        }
    log(f"{side} seed {seed}: chose lr {chosen['lr']:g} (val {chosen['val_acc']}), "
        f"test {out['test_acc']}")  # fmt: skip
    return out


def _best_val(root: Path, info: dict, stage: str) -> float | None:
    """The best ``val/accuracy`` in a fit stage's metrics.csv (its best checkpoint's)."""
    import csv

    version = info["stages"][stage]["version"]
    path = root / stage / f"version_{version}" / "metrics.csv"
    values = []
    if path.is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("val/accuracy"):
                    values.append(float(row["val/accuracy"]))
    return round(max(values), 4) if values else None


def caching(runner: Runner, mode: dict, seed: int, root: Path, first: dict) -> dict:
    """The cached rerun of the seed's first pipeline run, and the run after changing only the
    distillation temperature."""
    again = runner.run("cached_rerun", first["recipe"], *first["args"], label="cached_rerun")
    lr = mode["lrs"][0]
    changed = runner.recipe(
        f"lifecycle_seed{seed}_lr{lr:g}_temperature{CHANGED_TEMPERATURE:g}",
        lifecycle_pipeline(mode, seed, lr, root, temperature=CHANGED_TEMPERATURE),
    )
    after = runner.run("temperature_change", changed, "--until", "select")
    reran = [s for s, a in after["actions"].items() if a in ("run", "resume")]
    all_cached = all(a in ("cached", "skip") for a in again["actions"].values())
    # the runner's reasons compare with the stage's newest finished run (another learning rate's
    # here): what changed against the first run's distillation is read from the two records
    before, now = (record(root, r["info"], "distill").get("config") or {} for r in (first, after))
    diff = {
        key: [before.get(key), now.get(key)]
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    }
    return {
        "first_run_seconds": first["wall_seconds"],
        "first_run_cpu_seconds": first["cpu_seconds"],
        "first_run_stages": first["actions"],
        "cached_rerun_seconds": again["wall_seconds"],
        "cached_rerun_cpu_seconds": again["cpu_seconds"],
        "cached_rerun_actions": again["actions"],
        "cached_over_first": round(again["wall_seconds"] / first["wall_seconds"], 4),
        "rerun_after_change": reran,
        "rerun_after_change_reasons": {s: after["reasons"][s] for s in reran},
        "distill_config_diff_vs_first_run": diff,
        "rerun_after_change_seconds": after["wall_seconds"],
        "change": f"model.init_args.temperature 4.0 -> {CHANGED_TEMPERATURE} in stage distill",
        "cached_rerun_all_cached": all_cached,
        "met": {
            "cached_rerun": all_cached and again["wall_seconds"] <= 0.05 * first["wall_seconds"],
            "rerun_after_change": sorted(reran) == ["distill", "select"],
        },
    }


def resume(runner: Runner, mode: dict, seed: int, main_root: Path, main: dict) -> dict:
    """Kill the seed's fine-tune -> distil -> select once the fine-tune wrote a checkpoint, run
    it again, and compare its last stage's metrics with the uninterrupted run's (``main``: the
    seed's first pipeline run, at the first learning rate)."""
    lr = mode["lrs"][0]
    pretrain = record(main_root, main["info"], "pretrain")
    backbone = pretrain["outputs"]["backbone"]["path"]
    root = runner.work / "resume"
    shutil.rmtree(root, ignore_errors=True)  # a fresh fine-tune to kill, every time
    recipe = runner.recipe("resume", lifecycle_pipeline(mode, seed, lr, root, backbone=backbone))
    command = runner.command(recipe)
    logfile = runner.work / "logs" / "resume_killed.log"
    log(f"lifecycle run {recipe.name}, to be killed in fine-tuning (log: {logfile})")
    start = time.perf_counter()
    with open(logfile, "w") as out:
        process = subprocess.Popen(
            command, cwd=runner.code, env=runner.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        killed, sizes, seen = False, None, []
        while process.poll() is None:
            found = sorted((root / "finetune").glob("version_*/checkpoints/*.ckpt"))
            now = {str(p): p.stat().st_size for p in found if p.is_file()}
            if now and now == sizes:  # written, and not growing any more
                os.killpg(process.pid, signal.SIGKILL)
                killed, seen = True, sorted(Path(p).name for p in now)
                break
            sizes = now or None
            time.sleep(0.5)
        process.wait()
    killed_after = round(time.perf_counter() - start, 1)
    interrupted = json.loads((root / "finetune" / "version_0" / "lineage.json").read_text())
    log(f"  killed: {killed} after {killed_after} s, checkpoints {seen}, "
        f"fine-tune record status {interrupted.get('status')!r}")  # fmt: skip
    again = runner.run("resume", recipe, label="resume_rerun")
    last = list(again["info"]["stages"])[-1]
    resumed = record(root, again["info"], last)
    finetune = record(root, again["info"], "finetune")
    reference = record(main_root, main["info"], last)
    ref_finetune = record(main_root, main["info"], "finetune")
    identical = resumed.get("metrics") == reference.get("metrics")
    return {
        "killed_resume_identical": bool(killed and identical),
        "killed": killed,
        "killed_after_seconds": killed_after,
        "checkpoints_at_kill": seen,
        "finetune_status_after_kill": interrupted.get("status"),
        "resume_actions": again["actions"],
        "resume_reasons": again["reasons"],
        "finetune_attempts": finetune.get("attempts"),
        "finetune_resumed_from": finetune.get("resumed_from"),
        "last_stage": last,
        "resumed_metrics": resumed.get("metrics"),
        "uninterrupted_metrics": reference.get("metrics"),
        "finetune_metrics_identical": finetune.get("metrics") == ref_finetune.get("metrics"),
        "resumed_finetune_metrics": finetune.get("metrics"),
        "uninterrupted_finetune_metrics": ref_finetune.get("metrics"),
        "note": "the same fine-tune -> distill -> select stages as the first seed's first "
        f"lifecycle run (lr {lr:g}), in a folder of their own, the pretrained backbone given by "
        "path (model.init_args.backbone.init_args.path) instead of as the pretrain stage's output",
    }


# ------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke: tiny sizes, one seed")
    parser.add_argument("--out", default=None, help="the JSON (default: benchmarks/results/"
                        "lifecycle.json in full mode; required with --quick)")  # fmt: skip
    parser.add_argument("--work", default=None, help="pipelines and run folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument(
        "--lrs", type=float, nargs="+", default=None,
        help="the learning rates each side chooses from (the same count)",
    )  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first")
    parser.add_argument(
        "--live-code", action="store_true", dest="live_code",
        help="run the checkout's lifecycle/ and recipes/ instead of a copy taken at the start "
        "(an edit during the run then makes later stages run again)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick and not args.out:
        parser.error("--quick writes its JSON to --out (e.g. /tmp/lifecycle_quick.json)")
    name = "quick" if args.quick else "full"
    mode = {**MODES[name]}
    if args.seeds:
        mode["seeds"] = args.seeds
    if args.lrs:
        mode["lrs"] = args.lrs
    work = Path(args.work or f"runs/benchmarks/lifecycle{'-quick' if args.quick else ''}")
    work = (REPO / work).resolve() if not work.is_absolute() else work
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    student_network()  # read now, with the snapshot
    code = REPO if args.live_code else snapshot_code()
    where = "the checkout" if args.live_code else f"copied to {code}"
    log(f"lifecycle benchmark ({name}): seeds {mode['seeds']}, learning rates {mode['lrs']}, "
        f"work folder {work}, code {where}")  # fmt: skip
    try:
        result = measure(Runner(work, code), mode, name)
    finally:
        if code != REPO:
            shutil.rmtree(code, ignore_errors=True)
    result["code"] = {
        "ran_from": "the checkout" if args.live_code else "a copy of lifecycle/ and recipes/ "
        "taken at the start (removed at the end)",
        **code_info(),
        "source_hash": result.pop("_source_hash", None),
    }  # fmt: skip
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(f"wrote {out}")
    else:
        write_result("lifecycle", result)


def code_info() -> dict:
    """The checkout's commit and whether ``lifecycle/`` differs from it (at the end)."""

    def git(*words: str) -> str | None:
        done = subprocess.run(["git", *words], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--", "lifecycle")
    return {"git_commit": git("rev-parse", "HEAD"), "lifecycle_dirty": bool(status)}


def measure(runner: Runner, mode: dict, name: str) -> dict:
    """Both sides for every seed, the caching and the resume measurements: the result."""
    work = runner.work
    lifecycle_root, scratch_root = work / "lifecycle", work / "scratch"
    start, cpu_start = time.perf_counter(), _children_cpu()

    seeds: dict[int, dict] = {}
    cache_result = resume_result = None
    for seed in mode["seeds"]:
        seeds[seed] = {}
        seeds[seed]["lifecycle"] = one_side(
            runner, "lifecycle", mode, seed,
            lambda lr, s=seed: lifecycle_pipeline(mode, s, lr, lifecycle_root),
        )  # fmt: skip
        if seed == mode["seeds"][0]:
            # the seed's first pipeline run: the lifecycle's first learning rate
            first = runner.done[0]
            cache_result = caching(runner, mode, seed, lifecycle_root, first)
            resume_result = resume(runner, mode, seed, lifecycle_root, first)
        seeds[seed]["scratch"] = one_side(
            runner, "scratch", mode, seed,
            lambda lr, s=seed: scratch_pipeline(mode, s, lr, scratch_root),
        )  # fmt: skip
        life, scratch = seeds[seed]["lifecycle"], seeds[seed]["scratch"]
        seeds[seed]["gain"] = round(life["test_acc"] - scratch["test_acc"], 4)
        log(f"seed {seed}: lifecycle {life['test_acc']} vs scratch {scratch['test_acc']} "
            f"(gain {seeds[seed]['gain']:+.4f})")  # fmt: skip

    order = mode["seeds"]
    life = [seeds[s]["lifecycle"] for s in order]
    scratch = [seeds[s]["scratch"] for s in order]
    pretrain_versions = sorted({
        done["info"]["stages"]["pretrain"]["version"]
        for done in runner.done
        if done["root"] == lifecycle_root and "pretrain" in done["info"]["stages"]
    })  # fmt: skip
    first_pretrain = record(lifecycle_root, runner.done[0]["info"], "pretrain")
    code_changed = [
        {"run": r["label"], "stage": s, "reason": why}
        for r in runner.runs for s, why in r["reasons"].items() if "code changed" in why
    ]  # fmt: skip
    result: dict[str, Any] = {
        "mode": name,
        "seeds": order,
        "final_acc": spread([x["test_acc"] for x in life]),
        "scratch_acc": spread([x["test_acc"] for x in scratch]),
        "gain": spread([seeds[s]["gain"] for s in order]),
        "finetune_acc": spread([x["finetune_acc"] for x in life]),
        "finetune_val_acc": spread([x["finetune_val_acc"] for x in life]),
        "distill_val_acc": spread([x["val_acc"] for x in life]),
        "scratch_val_acc": spread([x["val_acc"] for x in scratch]),
        "stage_acc": {
            "pretrain_val_top1": (life[0]["pretrain"]["metrics"] or {}).get("val/top1"),
            "finetune_val": spread([x["finetune_val_acc"] for x in life])["median"],
            "finetune_test": spread([x["finetune_acc"] for x in life])["median"],
            "distill_val": spread([x["val_acc"] for x in life])["median"],
            "final_test": spread([x["test_acc"] for x in life])["median"],
            "scratch_val": spread([x["val_acc"] for x in scratch])["median"],
            "scratch_test": spread([x["test_acc"] for x in scratch])["median"],
            "note": "medians over seeds; pretrain_val_top1: SimCLR's positive-pair retrieval "
            "top-1 on its own validation split (not a class accuracy); finetune_test is the "
            "teacher_test stage, for information",
        },
        "pretrain_metrics": life[0]["pretrain"]["metrics"],
        "pretrain_seconds": life[0]["pretrain"]["seconds"],
        "pretraining_shared": {
            "versions": pretrain_versions,
            "one_for_all_seeds": len(pretrain_versions) == 1,
            "note": "the pretraining stage's config does not depend on the seed: one run "
            "(seed_everything 42, its own 2% validation split) serves every seed and every "
            "selection run through the pipeline's cache (the runs after the first find it cached)",
        },
        "per_seed": {str(s): seeds[s] for s in order},
        **(cache_result or {}),
        **(resume_result or {}),
        "met": {
            "gain": (spread([seeds[s]["gain"] for s in order])["median"] or 0) >= 0.05,
            **((cache_result or {}).get("met") or {}),
            "killed_resume_identical": bool((resume_result or {}).get("killed_resume_identical")),
        },
        "code_changed_during_run": code_changed,
        "protocol": protocol(mode),
        "pipeline_runs": runner.runs,
        "total_seconds": round(time.perf_counter() - start, 1),
        "total_cpu_seconds": round(_children_cpu() - cpu_start, 1),
        "work": str(work),
        "_source_hash": (first_pretrain.get("code") or {}).get("source_hash"),
    }
    return result


def protocol(mode: dict) -> dict:
    labels, val = mode["labels"], mode["val_images"]
    return {
        "dataset": "Fashion-MNIST (the Debian package's 60,000 training / 10,000 test images)",
        "seeds": mode["seeds"],
        "seed_draws": "data.init_args.seed (and seed_everything) of every supervised stage: the "
        f"{val}-image validation split (val_fraction {val}/{TRAIN_IMAGES}, stratified) and then "
        f"the {labels} labelled images (stratified_subset of the rest); both sides of a seed "
        "use the very same labels and validation images",
        "data_sizes": {
            "labelled": labels,
            "validation": val,
            "unlabelled": TRAIN_IMAGES - val - labels,
            "test": 10_000,
            "pretraining": "the recipe's: all 60,000 training images' pixels less its own 2% "
            "validation split (seed 42), labels never read; they include the downstream "
            "validation images' pixels, never the test images",
        },
        "sides": {
            "lifecycle": f"SimCLR pretraining ({PRETRAIN}) -> fine-tune on the labels "
            f"({FINETUNE}) -> distillation into the student on labels + unlabelled images "
            f"({DISTILL}, unlabeled_rest) -> validate -> test",
            "scratch": f"the same student network ({DISTILL}'s model.init_args.student) trained "
            f"on the labels alone ({CLASSIFY} with medium augmentation and batch 64, the "
            "fine-tuning recipe's data settings) -> validate -> test",
        },
        "selection": {
            "lifecycle": "the distillation's learning rate (AdamW lr = one-cycle max_lr)",
            "scratch": "the training's learning rate (AdamW lr = one-cycle max_lr)",
            "values": mode["lrs"],
            "split": "validation only: each run keeps its best checkpoint by val/accuracy "
            "(model.init_args.monitor), a `validate` stage scores it, the highest wins",
            "test": "read once per side per seed, by the chosen run's `test` stage (the "
            "others stop at `--until select`); for information the fine-tuned teacher is "
            "tested once per seed too (teacher_test), no choice uses it",
        },
        "selection_runs_per_side": len(mode["lrs"]),
        "budget": {
            "lifecycle": {
                "pretrain": mode["pretrain"] or "the recipe's (14 epochs)",
                "finetune": mode["finetune"],
                "distill": mode["distill"],
                "tuned": "distill lr; pretraining and fine-tuning at their recipes' settings",
            },
            "scratch": {"scratch": mode["scratch"]},
        },
        "note": "both sides (and the references: scratch is the reference) run in this same "
        "script, on the same machine, through the same `lifecycle run`; the caching and resume "
        "measurements use the real `python -m lifecycle run` subprocesses (wall time; CPU time "
        "of the subprocesses beside it, as the 2 cores may be shared)",
    }


if __name__ == "__main__":
    main()
