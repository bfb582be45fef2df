"""``lifecycle run --config PIPELINE.yaml``: a pipeline's stages run in order into one folder, each
stage skipped when a finished run of the same fingerprint exists, resumed when it was
interrupted, and run (saying why) otherwise.

- **Plan** (``--dry-run`` prints it and stops): the pipeline recipe is parsed and checked
  (:mod:`lifecycle.pipeline.spec`), each stage's config resolved by its own command's parser
  (``--print_config``: a typo in an override is that parser's error, named by stage), its
  outputs read from what its classes declare, and its inputs checked against them. A stage's
  **fingerprint** is the hash of its resolved config (its run-folder fields and its inputs'
  paths left out), its inputs' content hashes, its command and the code version
  (:func:`~lifecycle.pipeline.lineage.code_version`'s ``source_hash``). Each stage is then
  ``cached`` (a finished run with that fingerprint whose outputs are unchanged on disk),
  ``resume`` (an interrupted run with that fingerprint and a checkpoint: ``fit --ckpt_path
  last`` in its own folder) or ``run``, with the reason: ``config changed: model.init_args.
  temperature 4.0 -> 2.0``, ``input changed: finetune.best_checkpoint``, ``code changed``,
  ``forced``, ``no earlier run``. A stage downstream of one that runs is decided again once its
  inputs exist (it stays cached if they came out identical).
- **Run**: each stage is its own command, ``lifecycle <command> --config <recipe> <overrides>
  <inputs> --trainer.default_root_dir <root> --run_name <stage> --run_version N``, so it writes
  the run folder ``<root>/<stage>/version_N`` a user would get by hand. Its lineage record
  (``lineage.json``, see :mod:`lifecycle.pipeline.lineage`) is written when it starts and when
  it ends; a stage that fails is marked ``failed`` there, the pipeline stops with its error and
  nothing downstream runs. A pipeline killed at any moment and started again with the same
  command finds its finished stages cached and the interrupted one resumable.
- **Scale**: a stage on several processes (``trainer.devices: 2`` and a strategy preset) runs as a
  subprocess that Lightning's launcher starts its ranks from. A pipeline started on every rank
  by torchrun or SLURM (``RANK``/``WORLD_SIZE`` set) is planned by rank 0 (``plan.json`` in the
  pipeline folder, which the other ranks wait for and follow); every stage runs on all ranks
  with Lightning's own multi-node support, and only rank 0 writes records.
- **Tracking**: ``--tracking mlflow`` (:mod:`lifecycle.pipeline.tracking`).

One ``lifecycle run`` at a time may use a pipeline folder (a lock file, released when the
process ends, however it ends).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lifecycle.errors import ConfigError, UserError
from lifecycle.interfaces import StageOutput, output_paths
from lifecycle.pipeline import lineage
from lifecycle.pipeline.spec import (
    InputRef,
    Pipeline,
    Stage,
    ancestors,
    check_graph,
    check_input_names,
    command_line_argument,
    declared_outputs,
    descendants,
    input_argument,
    load_pipeline,
    parse_ref,
)
from lifecycle.pipeline.tracking import kept_tracking_uri

log = logging.getLogger(__name__)

PIPELINE_FILE = "pipeline.json"
PLAN_FILE = "plan.json"
LOCK_FILE = ".lock"
# fields of a resolved stage config that say where it writes, not what it computes
RUN_FOLDER_FIELDS = ("run_name", "run_version", "trainer.default_root_dir", "config")


@dataclass
class StageCommands:
    """What the runner needs of the ``lifecycle`` command, given by :mod:`lifecycle.cli` (which
    this package does not import).

    Attributes:
        names: the subcommands a stage may run.
        run: runs ``lifecycle ARGS`` in this process (raising what the command raises).
        describe: ``(type name, message, is_user_error)`` of an exception a command raised.
    """

    names: set[str]
    run: Callable[[list[str]], Any]
    describe: Callable[[BaseException], tuple[str, str, bool]]


@dataclass
class StagePlan:
    """One stage's place in a run: what it is, and what will be done with it (and why)."""

    name: str
    stage: Stage
    config: dict
    flat: dict
    outputs: dict[str, StageOutput]
    inputs: dict[str, tuple[InputRef, StageOutput, str]]
    launch: str
    root: Path
    action: str = "run"
    reason: str = ""
    version: int = 0
    record: dict | None = None
    input_paths: dict[str, str] = field(default_factory=dict)
    input_versions: dict[str, int] = field(default_factory=dict)
    ran_seconds: float | None = None

    @property
    def folder(self) -> Path:
        return self.root / self.name / f"version_{self.version}"


class StageFailed(UserError):
    """A stage of a pipeline failed with a user's mistake; its message names the stage."""


# ------------------------------------------------------------------------------------ helpers
def _distributed() -> tuple[int, int]:
    """``(rank, world size)`` of a pipeline started on several processes by torchrun/SLURM."""
    env = os.environ
    world = int(env.get("WORLD_SIZE") or env.get("SLURM_NTASKS") or 1)
    rank = int(env.get("RANK") or env.get("SLURM_PROCID") or 0)
    return rank, world


def _recipe_args(stage: Stage) -> list[str]:
    """``<command> --config <recipe>... --<field>=<override>...``: a stage's own command line."""
    args = [stage.command, *(a for c in stage.configs for a in ("--config", c))]
    return args + [command_line_argument(k, v) for k, v in stage.overrides.items()]


def _versions(folder: Path) -> list[int]:
    return sorted(
        int(p.name.split("_", 1)[1])
        for p in folder.glob("version_*")
        if p.name.split("_", 1)[1].isdigit()
    )


def _records(folder: Path) -> list[tuple[int, dict]]:
    found = []
    for version in _versions(folder):
        path = folder / f"version_{version}" / lineage.LINEAGE_FILE
        if path.is_file():
            with contextlib.suppress(ValueError, OSError):
                found.append((version, json.loads(path.read_text())))
    return found


# ------------------------------------------------------------------------------- the plan
class ConfigRefused(Exception):
    """The command's parser refused a command line; the message is the parser's own."""


def print_config(commands: StageCommands, args: list[str]) -> dict:
    """``lifecycle ARGS --print_config`` in this process: the config ``ARGS`` resolve to, nothing
    built or run.

    Raises:
        ConfigRefused: the parser refused it (a misspelt field, a bad value), with its message.
        ConfigError: a class the config names failed to import, with its message.
    """
    import yaml

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            commands.run([*args, "--print_config"])
    except SystemExit as done:
        if done.code in (0, None):
            return yaml.safe_load(out.getvalue()) or {}
        message = err.getvalue().strip()
        message = message.split("error: ", 1)[-1] if "error: " in message else message
        raise ConfigRefused(message) from None
    except Exception as error:  # noqa: BLE001 - a class the config names failed to import
        _, message, _ = commands.describe(error)
        raise ConfigError(message) from None
    raise ConfigRefused("the command printed no config.")


def resolve(commands: StageCommands, name: str, stage: Stage, source: str) -> dict:
    """The stage's config as its command resolves it (``--print_config``), without its inputs.

    Raises:
        ConfigError: the command's parser refused it (a misspelt override, a bad value),
            with its message and the stage named.
    """
    try:
        return print_config(commands, _recipe_args(stage))
    except ConfigRefused as refused:
        raise ConfigError(
            f"{source}: stage `{name}` (`lifecycle {stage.command}` on "
            f"{', '.join(stage.configs)}): {refused}\nFix: correct the stage's `overrides` or "
            "its recipe."
        ) from None
    except ConfigError as error:
        raise ConfigError(f"{source}: stage `{name}`: {error}") from None


def _launch(stage: Stage, config: dict) -> str:
    if stage.launch != "auto":
        return stage.launch
    if _distributed()[1] > 1:
        return "inprocess"  # the ranks were started already, by torchrun or SLURM
    trainer = config.get("trainer") or {}

    def count(value) -> int:
        if isinstance(value, list):
            return len(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return 1 if trainer.get("accelerator") == "cpu" else 2  # "auto": maybe several GPUs

    processes = count(trainer.get("devices", 1)) * int(trainer.get("num_nodes") or 1)
    return "subprocess" if processes > 1 else "inprocess"


def build_plans(
    pipeline: Pipeline, commands: StageCommands, source: str, root: Path
) -> list[StagePlan]:
    """Every stage's resolved config, outputs and inputs, in run order, all checked (see
    :mod:`lifecycle.pipeline.spec`); nothing decided yet."""
    order = check_graph(pipeline, commands.names, source)
    plans: dict[str, StagePlan] = {}
    for name in order:
        stage = pipeline.stages[name]
        config = resolve(commands, name, stage, source)
        flat = {
            k: v
            for k, v in lineage.flatten(config).items()
            if not any(k == f or k.startswith(f"{f}.") for f in RUN_FOLDER_FIELDS)
        }
        inputs = {}
        for target, ref_text in stage.inputs.items():
            ref = parse_ref(ref_text, name, target, source)
            upstream = plans[ref.stage]
            output = check_input_names(name, target, ref, upstream.outputs, upstream.stage.command)
            placeholder = str(root / ref.stage / "version_N" / output.path)
            try:
                argument, _ = input_argument(name, target, ref, output, config, placeholder)
            except ConfigError as error:
                raise ConfigError(f"{source}: {error}") from None
            inputs[target] = (ref, output, argument)
            for key in [k for k in flat if k == target or k.startswith(f"{target}.")]:
                del flat[key]
            flat[argument] = f"<input {ref}>"
        plans[name] = StagePlan(
            name, stage, config, flat, declared_outputs(stage.command, config), inputs,
            _launch(stage, config), root,
        )  # fmt: skip
    return list(plans.values())


def fingerprint(plan: StagePlan, input_hashes: dict[str, str]) -> str:
    """The hash a finished run must match to be reused (module docstring)."""
    code = lineage.code_version()
    blob = {
        "command": plan.stage.command,
        "config_hash": lineage.config_hash(plan.flat),
        "inputs": dict(sorted(input_hashes.items())),
        "code": [code.get("package_version"), code.get("source_hash")],
    }
    return lineage.config_hash(blob)


def _outputs_unchanged(record: dict) -> str | None:
    """``None`` when every output of a finished record is on disk with its hash, else what
    changed."""
    for name, output in (record.get("outputs") or {}).items():
        path = Path(output["path"])
        if not path.exists():
            return f"output {name} is gone ({path})"
        if lineage.content_hash(path) != output.get("hash"):
            return f"output {name} changed on disk ({path})"
    return None


def _why_changed(plan: StagePlan, record: dict, input_hashes: dict[str, str]) -> str:
    reasons = []
    if record.get("command") != plan.stage.command:
        reasons.append(f"command changed: {record.get('command')} -> {plan.stage.command}")
    old_code = (record.get("code") or {}).get("source_hash")
    if old_code != lineage.code_version().get("source_hash"):
        reasons.append(
            f"code changed (lifecycle source {lineage.short_hash(old_code)} -> "
            f"{lineage.short_hash(lineage.code_version().get('source_hash'))})"
        )
    changes = lineage.diff(record.get("config") or {}, plan.flat)
    if changes:
        shown = "; ".join(changes[:3]) + (
            f"; and {len(changes) - 3} more" if len(changes) > 3 else ""
        )
        reasons.append(f"config changed: {shown}")
    old_inputs = record.get("inputs") or {}
    for target, (ref, _, _) in plan.inputs.items():
        if (old_inputs.get(target) or {}).get("hash") != input_hashes.get(target):
            reasons.append(f"input changed: {ref}")
    return "; ".join(reasons) or "fingerprint changed"


def decide(plan: StagePlan, input_hashes: dict[str, str | None], forced: str | None) -> None:
    """Set ``plan``'s action (``cached``, ``resume``, ``run``), version and reason from the
    records in its stage folder."""
    records = _records(plan.root / plan.name)
    versions = _versions(plan.root / plan.name)
    next_version = (versions[-1] + 1) if versions else 0
    plan.record, plan.action, plan.version = None, "run", next_version
    if forced:
        plan.reason = forced
        return
    unknown = [str(plan.inputs[t][0]) for t, h in input_hashes.items() if h is None]
    if unknown:
        stages = sorted({u.split(".", 1)[0] for u in unknown})
        plan.reason = f"input will change: {', '.join(f'`{s}`' for s in stages)} run{'s' if len(stages) == 1 else ''} first"
        return
    hashes = {t: h for t, h in input_hashes.items() if h is not None}
    print_fp = fingerprint(plan, hashes)
    same = [(v, r) for v, r in records if r.get("fingerprint") == print_fp]
    for version, record in reversed(same):
        status = record.get("status")
        if status == "finished":
            changed = _outputs_unchanged(record)
            if changed is None:
                plan.action, plan.version, plan.record = "cached", version, record
                plan.reason = f"cached: the same fingerprint finished in version_{version}"
                return
            plan.reason = f"{changed}: runs again"
            return
        if status == "running":
            folder = plan.root / plan.name / f"version_{version}"
            checkpoints = sorted(folder.glob("checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
            if plan.stage.command == "fit" and checkpoints:
                plan.action, plan.version, plan.record = "resume", version, record
                plan.reason = (
                    f"resumes version_{version}, interrupted, from its checkpoint "
                    f"{checkpoints[-1].name}"
                )
                return
            plan.reason = f"version_{version} was interrupted before a checkpoint: runs again"
            return
        if status == "failed":
            error = (record.get("error") or {}).get("type", "an error")
            plan.reason = f"version_{version} failed ({error.rsplit('.', 1)[-1]}): runs again"
            return
    finished = [r for _, r in records if r.get("status") == "finished"]
    if not finished:
        plan.reason = "no earlier run"
        return
    # against the finished run closest to this one (the newest among equals), so that with several
    # settings side by side the reason names what differs from the nearest, not from the last
    nearest = min(
        reversed(finished), key=lambda r: len(lineage.diff(r.get("config") or {}, plan.flat))
    )
    plan.reason = _why_changed(plan, nearest, hashes)


def _input_hashes(plan: StagePlan, plans: dict[str, StagePlan]) -> dict[str, str | None]:
    hashes = {}
    for target, (ref, _, _) in plan.inputs.items():
        upstream = plans[ref.stage]
        record = upstream.record if upstream.action == "cached" else None
        output = ((record or {}).get("outputs") or {}).get(ref.output)
        hashes[target] = output.get("hash") if output else None
    return hashes


def _selection(pipeline: Pipeline, options: RunOptions) -> tuple[set[str], set[str]]:
    """``(considered, forced)`` stages by ``--until``, ``--from`` and ``--force``."""
    names = set(pipeline.stages)
    for given in [*options.force, options.start, options.until]:
        if given and given != "all" and given not in names:
            extra = ", all (--force)" if given in options.force else ""
            raise ConfigError(
                f"no stage `{given}` in the pipeline. Valid: {', '.join(pipeline.stages)}{extra}."
            )
    considered = ancestors(pipeline, options.until) if options.until else names
    forced = names if "all" in options.force else set(options.force)
    if options.start:
        after = descendants(pipeline, [options.start])
        forced |= after
        considered &= after | ancestors(pipeline, options.start)
    return considered, forced & considered


def plan_pipeline(
    pipeline: Pipeline, commands: StageCommands, source: str, root: Path, options: RunOptions
) -> list[StagePlan]:
    """The checked, decided plan of a run (see the module docstring)."""
    plans = build_plans(pipeline, commands, source, root)
    considered, forced = _selection(pipeline, options)
    by_name = {p.name: p for p in plans}
    for plan in plans:
        if plan.name not in considered:
            plan.action, plan.reason = "skip", "left out by --until/--from"
            versions = [v for v, r in _records(root / plan.name) if r.get("status") == "finished"]
            plan.version = versions[-1] if versions else 0
            continue
        why = "forced (--force)" if plan.name in options.force or "all" in options.force else None
        if why is None and plan.name in forced:
            why = f"forced (--from {options.start})"
        decide(plan, _input_hashes(plan, by_name), why)
    return plans


# ------------------------------------------------------------------------------------ running
@dataclass
class RunOptions:
    """``lifecycle run``'s options besides the recipe (see :func:`run_command`)."""

    dry_run: bool = False
    force: list[str] = field(default_factory=list)
    start: str | None = None
    until: str | None = None
    tracking: str | None = None
    tracking_uri: str | None = None


def stage_args(plan: StagePlan) -> list[str]:
    """The command line of a stage's run (without ``lifecycle``)."""
    args = _recipe_args(plan.stage)
    for target, (ref, output, _) in plan.inputs.items():
        # the field and value the plan checked, now with the real path
        args.append(command_line_argument(*input_argument(
            plan.name, target, ref, output, plan.config, plan.input_paths[target]
        )))  # fmt: skip
    args += [
        f"--trainer.default_root_dir={plan.root}",
        f"--run_name={plan.name}",
        f"--run_version={plan.version}",
    ]
    if plan.action == "resume":
        args.append("--ckpt_path=last")
    return args


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """A child process's ``preexec_fn``: the kernel kills it when its parent dies (Linux), so a
    killed runner leaves no stage running on."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def scoped_environment(values: dict[str, str]):
    """``os.environ`` with ``values`` set while the block runs, as it was afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_OWN_FOLDER_WARNING = "Experiment logs directory"


def _run_stage(plan: StagePlan, commands: StageCommands, env: dict[str, str]) -> None:
    """Run a stage's command; raise what it raised (in-process) or a RuntimeError/StageFailed
    with its FAILED file's message (subprocess)."""
    args = stage_args(plan)
    print(f"\n── stage {plan.name}: lifecycle {' '.join(args)}", flush=True)
    # the runner made the run folder (its lineage.json): Lightning's CSVLogger warns of any
    # folder it finds not empty, though it replaces only its own metrics.csv
    if plan.launch == "inprocess":
        with scoped_environment(env), kept_tracking_uri(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=f"{_OWN_FOLDER_WARNING}.*")
            commands.run(args)
        return
    child_env = {**os.environ, **env}
    child_env["PYTHONWARNINGS"] = ",".join(
        w for w in (os.environ.get("PYTHONWARNINGS"), f"ignore:{_OWN_FOLDER_WARNING}") if w
    )
    done = subprocess.run(
        [sys.executable, "-m", "lifecycle", *args], env=child_env, preexec_fn=die_with_parent
    )
    if done.returncode != 0:
        failed = plan.folder / "FAILED"
        if failed.is_file():
            kind, _, message = failed.read_text().partition("\n")
            raise _SubprocessFailed(kind, message.strip() or f"exit status {done.returncode}")
        raise _SubprocessFailed("", f"`lifecycle {plan.stage.command}` exited with status "
                                f"{done.returncode}")  # fmt: skip


class _SubprocessFailed(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _base_record(plan: StagePlan, pipeline_info: dict, input_hashes: dict[str, str]) -> dict:
    inputs = {}
    for target, (ref, _, _) in plan.inputs.items():
        inputs[target] = {
            "from": str(ref),
            "stage": ref.stage,
            "output": ref.output,
            "path": plan.input_paths[target],
            "hash": input_hashes[target],
            "folder": str(plan.root / ref.stage / f"version_{plan.input_versions[ref.stage]}"),
        }
    return {
        "format": "lifecycle.lineage",
        "version": 1,
        "pipeline": pipeline_info,
        "stage": plan.name,
        "command": plan.stage.command,
        "status": "running",
        "folder": str(plan.folder),
        "config": plan.flat,
        "config_hash": lineage.config_hash(plan.flat),
        "fingerprint": fingerprint(plan, input_hashes),
        "code": lineage.code_version(),
        "versions": lineage.library_versions(),
        "inputs": inputs,
        "started": lineage.now(),
        "launch": plan.launch,
        "resumed_from": None,
        "attempts": 1,
    }


def _finish_outputs(plan: StagePlan, needed: set[str]) -> dict:
    """The outputs the stage wrote, with their hashes; a needed one that is missing fails it."""
    found = {}
    paths = output_paths(type("Declared", (), {"outputs": plan.outputs}), plan.folder)
    for name, path in paths.items():
        if path.exists() and "*" not in path.name:
            found[name] = {"path": str(path), "hash": lineage.content_hash(path)}
        elif name in needed:
            output = plan.outputs[name]
            raise StageFailed(
                f"stage `{plan.name}` finished without writing `{name}` ({output.path}: "
                f"{output.description}), which a later stage takes as input. Fix: change the "
                "stage's settings so it writes it (e.g. a `best_checkpoint` needs a validation "
                "run: check_val_every_n_epoch <= max_epochs), or take another output."
            )
    return found


def _earlier_attempts(plan: StagePlan) -> float:
    """Seconds a resumed stage ran before: a killed attempt wrote none, so from its start to
    its newest checkpoint."""
    if plan.action != "resume" or plan.record is None:
        return 0.0
    if plan.record.get("seconds") is not None:
        return float(plan.record["seconds"])
    checkpoints = sorted(plan.folder.glob("checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
    try:
        started = datetime.fromisoformat(plan.record["started"]).timestamp()
    except (KeyError, ValueError):
        return 0.0
    return max(0.0, checkpoints[-1].stat().st_mtime - started) if checkpoints else 0.0


class PipelineRun:
    """One ``lifecycle run``: the plan made, the stages run, the records written."""

    def __init__(self, pipeline: Pipeline, source: str, root: Path, options: RunOptions, commands):
        self.pipeline, self.source, self.root, self.options = pipeline, source, root, options
        self.commands = commands
        self.rank, self.world = _distributed()
        self.tracker = None
        self.info = {"name": root.name, "root": str(root), "recipe": source}

    # -------------------------------------------------------------------------------- plan
    def plan(self) -> list[StagePlan]:
        if self.world > 1 and self.rank > 0:
            return self._follow_plan()
        plans = plan_pipeline(self.pipeline, self.commands, self.source, self.root, self.options)
        if self.world > 1:
            self._share_plan(plans)
        return plans

    def _launch_id(self) -> str:
        env = os.environ
        parts = [env.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID")]
        return ":".join([*parts, env.get("MASTER_ADDR", ""), env.get("MASTER_PORT", "")])

    def _share_plan(self, plans: list[StagePlan]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shared = {
            "launch": self._launch_id(),
            "written": time.time(),
            "stages": {p.name: [p.action, p.version, p.reason] for p in plans},
        }
        lineage.write_json(self.root / PLAN_FILE, shared)

    def _follow_plan(self) -> list[StagePlan]:
        plans = build_plans(self.pipeline, self.commands, self.source, self.root)
        path, started = self.root / PLAN_FILE, time.time()
        while True:
            with contextlib.suppress(OSError, ValueError):
                shared = json.loads(path.read_text())
                if shared["launch"] == self._launch_id() and shared["written"] > started - 600:
                    break
            if time.time() - started > 1800:
                raise ConfigError(
                    f"rank {self.rank}: rank 0 wrote no plan into {path} in 30 minutes."
                )
            time.sleep(1)
        for plan in plans:
            plan.action, plan.version, plan.reason = shared["stages"][plan.name]
        return plans

    # --------------------------------------------------------------------------------- run
    def execute(self, plans: list[StagePlan]) -> list[StagePlan]:
        by_name = {p.name: p for p in plans}
        needed = {ref.stage: set() for p in plans for ref, _, _ in p.inputs.values()}
        for plan in plans:
            for ref, _, _ in plan.inputs.values():
                needed[ref.stage].add(ref.output)
        writer = self.rank == 0
        if writer and self.options.tracking == "mlflow":
            from lifecycle.pipeline.tracking import MlflowTracker

            self.tracker = MlflowTracker(
                self.root,
                self.options.tracking_uri,
                registered_model=self.pipeline.registered_model,
            )
            self.tracker.start_pipeline(self.info["name"], _recipe_dict(self.pipeline))
        status = "FAILED"
        try:
            for plan in plans:
                self._stage(plan, by_name, needed.get(plan.name, set()), writer)
            status = "FINISHED"
            if self.tracker is not None:
                self._register(plans)
        finally:
            if self.tracker is not None:
                self.tracker.finish(status)
        return plans

    def _stage(self, plan: StagePlan, by_name: dict, needed: set[str], writer: bool) -> None:
        plan.input_versions = {
            r.stage: by_name[r.stage].version for r, _, _ in plan.inputs.values()
        }
        if plan.action == "skip":
            print(f"── stage {plan.name}: skipped ({plan.reason})")
            return
        hashes = {}
        for target, (ref, _, _) in plan.inputs.items():
            upstream = by_name[ref.stage]
            output = ((upstream.record or {}).get("outputs") or {}).get(ref.output)
            if output is None:
                raise StageFailed(
                    f"stage `{plan.name}` needs `{ref}`, but stage `{ref.stage}` has no finished "
                    f"run with it in {self.root / ref.stage}. Fix: run without --from/--until, "
                    f"or run `{ref.stage}` first."
                )
            plan.input_paths[target] = output["path"]
            hashes[target] = output["hash"]
        if plan.action == "run" and plan.reason.startswith("input will change") and self.world == 1:
            decide(plan, hashes, None)  # its inputs exist now: they may have come out the same
        if plan.action == "cached":
            print(f"── stage {plan.name}: cached (version_{plan.version})")
            if self.tracker is not None and writer:
                self.tracker.start_stage(plan.name, plan.stage.command)
                self.tracker.end_stage(plan.name, {**plan.record, "cached": True}, plan.folder)
            return
        print(f"── stage {plan.name}: {plan.action}s: {plan.reason}", flush=True)
        record = _base_record(plan, self.info, hashes)
        if plan.action == "resume" and plan.record is not None:
            record["started"] = plan.record.get("started", record["started"])
            record["attempts"] = int(plan.record.get("attempts", 1)) + 1
            checkpoints = sorted(
                plan.folder.glob("checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime
            )
            record["resumed_from"] = str(checkpoints[-1]) if checkpoints else None
        env = {}
        if writer:
            lineage.write_record(plan.folder, record)
            if self.tracker is not None:
                env = self.tracker.start_stage(plan.name, plan.stage.command)
        began = time.time()
        try:
            _run_stage(plan, self.commands, env)
            outputs = _finish_outputs(plan, needed)
        except BaseException as error:
            if writer:
                self._failed(plan, record, error, began)
            raise self._failure(plan, error) from error
        if writer:
            record = lineage.update_record(
                plan.folder,
                status="finished",
                outputs=outputs,
                metrics=lineage.headline_metrics(plan.folder),
                ended=lineage.now(),
                seconds=round(time.time() - began + _earlier_attempts(plan), 2),
            )
            if self.tracker is not None:
                self.tracker.end_stage(plan.name, record, plan.folder)
        else:
            record = {**record, "status": "finished", "outputs": outputs}
        plan.record = record
        plan.ran_seconds = time.time() - began

    def _failed(self, plan: StagePlan, record: dict, error: BaseException, began: float) -> None:
        if isinstance(error, _SubprocessFailed):
            kind, message = error.kind or "RuntimeError", str(error)
        else:
            kind, message, _ = self.commands.describe(error)
        record = lineage.update_record(
            plan.folder,
            status="failed",
            error={"type": kind, "message": message},
            ended=lineage.now(),
            seconds=round(time.time() - began, 2),
        )
        if self.tracker is not None:
            self.tracker.end_stage(plan.name, record, plan.folder)

    def _failure(self, plan: StagePlan, error: BaseException) -> BaseException:
        if isinstance(error, StageFailed):
            return error
        if isinstance(error, _SubprocessFailed):
            message = str(error)
            user = error.kind and "Error" in error.kind
        else:
            _, message, user = self.commands.describe(error)
            if isinstance(error, KeyboardInterrupt):
                message, user = "interrupted", True
            elif isinstance(error, SystemExit) and error.code in (None, 0):
                message, user = "it was stopped before it finished (e.g. by SIGTERM)", True
            elif isinstance(error, SystemExit):
                message, user = f"its command exited with status {error.code}", True
        text = (
            f"stage `{plan.name}` failed: {message}\nIts run folder: {plan.folder} (lineage.json "
            "says failed). Nothing after it ran. Fix the cause and run the same command again: "
            "finished stages are cached."
        )
        return StageFailed(text) if user else RuntimeError(text)

    def _register(self, plans: list[StagePlan]) -> None:
        for plan in reversed(plans):
            record = plan.record or {}
            for name in ("best_checkpoint", "checkpoint"):
                output = (record.get("outputs") or {}).get(name)
                if output:
                    self.tracker.register_model(plan.name, Path(output["path"]), record)
                    return
            for value in (record.get("inputs") or {}).values():
                if value["path"].endswith(".ckpt"):
                    self.tracker.register_model(plan.name, Path(value["path"]), record)
                    return


def _recipe_dict(pipeline: Pipeline) -> dict:
    from dataclasses import asdict

    return asdict(pipeline)


# ------------------------------------------------------------------------------------ printing
def print_plan(plans: list[StagePlan]) -> None:
    """The plan as a table: stage, command, action, folder, why."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="plan", header_style="bold")
    for column in ("stage", "command", "will", "folder", "why"):
        table.add_column(column, overflow="fold")  # long paths wrap, never cut
    for plan in plans:
        table.add_row(plan.name, plan.stage.command, plan.action, str(plan.folder), plan.reason)
    Console(width=160).print(table)


def print_summary(plans: list[StagePlan], seconds: float) -> None:
    """The table at the end of a run: stage, ran/cached, minutes, headline metric, parameters,
    output folder."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lifecycle run: {seconds / 60:.1f} min", header_style="bold")
    for column in ("stage", "", "minutes", "headline metric", "parameters", "output folder"):
        table.add_column(column, overflow="fold")  # long paths wrap, never cut
    for plan in plans:
        record = plan.record or {}
        minutes = getattr(plan, "ran_seconds", None)
        headline = lineage.headline(record.get("metrics"))
        params = (record.get("model") or {}).get("parameters")
        done = {"run": "ran", "resume": "resumed", "cached": "cached", "skip": "skipped"}
        table.add_row(
            plan.name,
            done.get(plan.action, plan.action),
            f"{minutes / 60:.1f}" if minutes is not None else "-",
            headline or "-",
            f"{params:,}" if params else "-",
            str(plan.folder),
        )
    Console(width=160).print(table)


def _write_pipeline(root: Path, source: str, plans: list[StagePlan], status: str, began: str):
    lineage.write_json(
        root / PIPELINE_FILE,
        {
            "format": "lifecycle.pipeline",
            "recipe": source,
            "status": status,
            "started": began,
            "ended": lineage.now(),
            "order": [p.name for p in plans],
            "stages": {
                p.name: {
                    "version": p.version,
                    "action": p.action,
                    "reason": p.reason,
                    "folder": str(p.folder),
                    "inputs": {t: str(ref) for t, (ref, _, _) in p.inputs.items()},
                }
                for p in plans
            },
        },
    )


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: str):
    """Hold an exclusive lock on ``path`` (made if missing) while the block runs, released
    however the process ends; ``busy`` is the ConfigError's message when another holds it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(busy) from None
        yield


def _lock(root: Path):
    return exclusive_lock(
        root / LOCK_FILE,
        f"another `lifecycle run` is using {root} now. Fix: wait for it to end, or give this "
        "run another folder (--root).",
    )


# ------------------------------------------------------------------------------------ command
def default_root(source: str) -> Path:
    """``runs/<recipe folder>-<recipe file>``, as a single stage's run is named."""
    path = Path(source)
    return Path("runs") / (f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem)


# the pipeline recipe's fields a command line may give (jsonargparse parses them)
OVERRIDABLE = ("--stages.", "--presets", "--overrides", "--registered_model")


def _parse_options(args: list[str]) -> tuple[str, list[str], RunOptions]:
    import argparse

    parser = argparse.ArgumentParser(
        prog="lifecycle run",
        description="Run a pipeline recipe: its stages in order into one folder, each cached, "
        "resumed or run (and why), with a lineage record per stage.",
    )
    parser.add_argument("--config", required=True, help="the pipeline recipe (YAML)")
    parser.add_argument("--dry-run", "--dry_run", action="store_true", dest="dry_run",
                        help="print the plan (each stage: cached, resume or run, and why) and stop")  # fmt: skip
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="run STAGE even if cached (repeatable; `all`: every stage)")  # fmt: skip
    parser.add_argument("--from", dest="start", metavar="STAGE",
                        help="run STAGE and every stage after it again; earlier ones as planned")  # fmt: skip
    parser.add_argument("--until", metavar="STAGE",
                        help="run STAGE and the stages it needs, nothing after it")  # fmt: skip
    parser.add_argument("--tracking", choices=["none", "mlflow"], default=None,
                        help="record the run in MLflow (the `tracking` extra); default: the recipe's")  # fmt: skip
    parser.add_argument("--tracking_uri", "--tracking-uri", default=None, dest="tracking_uri",
                        help="the MLflow tracking server (default: a SQLite file in the pipeline folder)")  # fmt: skip
    parser.add_argument(
        "--root", default=None, help="the pipeline folder (default: the recipe's root)"
    )
    known, rest = parser.parse_known_args(args)
    options = RunOptions(
        dry_run=known.dry_run, force=known.force, start=known.start, until=known.until,
        tracking=known.tracking, tracking_uri=known.tracking_uri,
    )  # fmt: skip
    extra = ["--root", known.root] if known.root else []
    for word in rest:
        if word.startswith("-") and not word.startswith(OVERRIDABLE):
            raise ConfigError(
                f"unknown option {word}. Valid: --config, --dry-run, --force, --from, --until, "
                "--tracking, --tracking_uri, --root, --presets, --overrides, and "
                "--stages.<stage>.<key> (a field of the pipeline recipe)."
            )
    return known.config, [*extra, *rest], options


def run_command(args: list[str], commands: StageCommands) -> int:
    """``lifecycle run --config PIPELINE.yaml [--dry-run] [--force STAGE] [--from STAGE]
    [--until STAGE] [--tracking mlflow] [--root DIR]``: plan, print the plan, run it, print the
    summary and the lineage tree (and draw it as ``<root>/lineage.png``). Returns the exit
    status.

    Raises:
        ConfigError, MissingFileError: a mistake in the recipe, found before anything runs.
        StageFailed: a stage failed with a user's mistake (its message names the stage).
    """
    source, extra, options = _parse_options(args)
    pipeline = load_pipeline(source, extra)
    root = Path(pipeline.root) if pipeline.root else default_root(source)
    if options.tracking is None:
        options.tracking = pipeline.tracking
    options.tracking_uri = options.tracking_uri or pipeline.tracking_uri
    run = PipelineRun(pipeline, source, root, options, commands)
    began, start = lineage.now(), time.time()
    lock = _lock(root) if run.rank == 0 and not options.dry_run else contextlib.nullcontext()
    with lock:
        plans = run.plan()
        print_plan(plans)
        if options.dry_run:
            print("dry run: nothing ran.")
            return 0
        try:
            run.execute(plans)
        except BaseException:
            if run.rank == 0:
                _write_pipeline(root, source, plans, "failed", began)
            raise
        if run.rank != 0:
            return 0
        _write_pipeline(root, source, plans, "finished", began)
    print_summary(plans, time.time() - start)
    print(lineage.lineage_tree(root))
    picture = lineage.draw_lineage(root, root / "lineage.png")
    print(f"wrote {picture}")
    return 0
