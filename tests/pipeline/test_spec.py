"""A pipeline recipe is checked before anything runs (lifecycle.pipeline.spec and the plan of
lifecycle.pipeline.runner): every mistake ends ``lifecycle run`` with exit status 2 and a message
naming the stage, the field and the valid choices, no traceback, and no stage folder; a
``--dry-run`` prints the plan and writes nothing."""

import pytest

from lifecycle.errors import ConfigError, MissingFileError
from lifecycle.pipeline.spec import Pipeline, Stage, check_graph, load_pipeline
from tests.pipeline.pipeline_helpers import (
    plan_rows,
    run_pipeline,
    squeezed,
    tiny_stages,
    versions,
    write_pipeline,
)

COMMANDS = {"fit", "validate", "test", "predict", "clean", "augment"}
CLASSIFY = "recipes/digits/classify.yaml"


def _with(change) -> dict:
    stages = tiny_stages()
    change(stages)
    return stages


def _cycle(stages: dict) -> None:
    stages["clean"]["inputs"] = {"cleaning.subset": "distill.metrics"}


# (id, a change of the tiny pipeline, what the message must hold)
MISTAKES = [
    (
        "unknown stage in an input",
        lambda s: s["train"]["inputs"].update({"data.init_args.cleaned_manifest": "clen.manifest"}),
        ["stage `train`", "there is no stage `clen`", "did you mean `clean`?", "Valid: clean, distill."],
    ),
    (
        "unknown output",
        lambda s: s["train"]["inputs"].update({"data.init_args.cleaned_manifest": "clean.manifests"}),
        ["stage `train`", "stage `clean` (`clean`) writes no output `manifests`",
         "did you mean `manifest`?", "findings, log, manifest, removed, report"],
    ),
    (
        "cycle",
        _cycle,
        ["the stages' inputs form a cycle: clean -> distill -> train -> clean"],
    ),
    (
        "manifest as a backbone",
        lambda s: s["train"]["inputs"].update({"model.init_args.backbone": "clean.manifest"}),
        ["stage `train`", "`clean.manifest` is a manifest (manifest.csv",
         "`model.init_args.backbone` (holds lifecycle.models.SmallCNN) takes a pretrained "
         "backbone folder (e.g. pretrain.backbone)"],
    ),
    (
        "manifest as a teacher",
        lambda s: s["distill"]["inputs"].update({"model.init_args.teacher": "clean.manifest"}),
        ["stage `distill`", "`clean.manifest` is a manifest",
         "`model.init_args.teacher` (holds lifecycle.stages.distillation.load_teacher) takes a "
         "checkpoint (e.g. finetune.best_checkpoint)"],
    ),
    (
        "missing recipe",
        lambda s: s["train"].update(config="recipes/digits/classifyy.yaml"),
        ["stage `train`: no recipe at", "recipes/digits/classifyy.yaml", "Fix: correct `config`"],
    ),
    (
        "typo in an override",
        lambda s: s["distill"]["overrides"].update({"model.init_args.temprature": 2.0}),
        ["stage `distill` (`lifecycle fit` on recipes/fashion_mnist/distill.yaml)",
         "Option 'temprature' is not accepted",
         "Fix: correct the stage's `overrides`"],
    ),
    (
        "misspelt stage key",
        lambda s: s["train"].update(comand=s["train"].pop("command")),
        ["stage `train`: unknown key `comand`. (did you mean `command`?)",
         "Valid: command, config, inputs, launch, overrides."],
    ),
    (
        "unknown command",
        lambda s: s["distill"].update(command="fitt"),
        ["stage `distill`: unknown command `fitt`. (did you mean `fit`?)",
         "Valid: augment, clean, fit, predict, test, tune, validate."],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "change, expected", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_a_mistake_in_the_recipe_is_named_before_anything_runs(tmp_path, change, expected):
    root = tmp_path / "run"
    recipe = write_pipeline(tmp_path / "pipeline.yaml", root, _with(change))
    run = run_pipeline(recipe)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith("lifecycle run: error: "), run.stderr
    assert "Traceback" not in run.stderr
    message = " ".join(run.stderr.split())  # as one line, whatever the wrapping
    for text in expected:
        assert " ".join(text.split()) in message, f"{text!r} not in {run.stderr}"
    assert not root.exists() or versions(root) == {}  # no stage started
    assert "── stage" not in run.stdout


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--force", "trian"], "no stage `trian` in the pipeline. Valid: clean, train, distill, all (--force)."),
        (["--until", "test"], "no stage `test` in the pipeline. Valid: clean, train, distill."),
        (["--forse", "train"], "unknown option --forse."),
    ],
    ids=["--force", "--until", "unknown option"],
)  # fmt: skip
def test_a_wrong_option_names_the_valid_ones(tmp_path, options, expected):
    root = tmp_path / "run"
    recipe = write_pipeline(tmp_path / "pipeline.yaml", root, tiny_stages())
    run = run_pipeline(recipe, "--dry-run", *options)
    assert run.returncode == 2
    assert expected in run.stderr and "Traceback" not in run.stderr
    assert not root.exists()


def test_a_missing_pipeline_recipe_is_named(tmp_path):
    run = run_pipeline(tmp_path / "nope.yaml")
    assert run.returncode == 2
    assert f"No pipeline recipe at {tmp_path / 'nope.yaml'}" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    root = tmp_path / "run"
    recipe = write_pipeline(tmp_path / "pipeline.yaml", root, tiny_stages())
    run = run_pipeline(recipe, "--dry-run")
    assert run.returncode == 0, run.stderr
    rows = plan_rows(run.stdout)
    assert list(rows) == ["clean", "train", "distill"]  # in run order
    folder = {name: squeezed(str(root / name / "version_0")) for name in rows}
    assert rows["clean"] == ["clean", "clean", "run", folder["clean"], squeezed("no earlier run")]
    # a stage after one that runs is decided again once its inputs exist
    assert rows["train"] == ["train", "fit", "run", folder["train"],
                             squeezed("input will change: `clean` runs first")]  # fmt: skip
    assert rows["distill"] == ["distill", "fit", "run", folder["distill"],
                               squeezed("input will change: `train` runs first")]  # fmt: skip
    assert run.stdout.rstrip().endswith("dry run: nothing ran.")
    assert "── stage" not in run.stdout  # no stage started
    assert not root.exists()


# ------------------------------------------------------------------ the spec's own functions
def _pipeline(**stages: Stage) -> Pipeline:
    return Pipeline(stages=stages)


def test_the_run_order_puts_each_stage_after_its_inputs_and_keeps_the_recipes_otherwise():
    pipeline = _pipeline(
        report=Stage("test", CLASSIFY, inputs={"ckpt_path": "train.best_checkpoint"}),
        other=Stage("fit", CLASSIFY),
        train=Stage("fit", CLASSIFY, inputs={"data.init_args.cleaned_manifest": "clean.manifest"}),
        clean=Stage("clean", "recipes/fashion_mnist/clean.yaml"),
    )
    assert check_graph(pipeline, COMMANDS, "p.yaml") == ["other", "clean", "train", "report"]


def test_the_graph_checks_raise_the_user_errors():
    with pytest.raises(ConfigError, match=r"p.yaml: the stages' inputs form a cycle: a -> b -> a"):
        check_graph(
            _pipeline(
                a=Stage("fit", CLASSIFY, inputs={"model.init_args.backbone": "b.backbone"}),
                b=Stage("fit", CLASSIFY, inputs={"ckpt_path": "a.checkpoint"}),
            ),
            COMMANDS,
            "p.yaml",
        )
    with pytest.raises(
        ConfigError, match=r"input `ckpt_path: a.checkpoint` names the stage itself"
    ):
        check_graph(_pipeline(a=Stage("fit", CLASSIFY, inputs={"ckpt_path": "a.checkpoint"})),
                    COMMANDS, "p.yaml")  # fmt: skip
    with pytest.raises(ConfigError, match=r"must name `<stage>.<output>`"):
        check_graph(_pipeline(a=Stage("fit", CLASSIFY), b=Stage("fit", CLASSIFY, inputs={"ckpt_path": "a"})),
                    COMMANDS, "p.yaml")  # fmt: skip
    with pytest.raises(MissingFileError, match=r"stage `a`: no recipe at .*nope.yaml"):
        check_graph(_pipeline(a=Stage("fit", ["recipes/digits/classify.yaml", "nope.yaml"])),
                    COMMANDS, "p.yaml")  # fmt: skip


def test_load_pipeline_reads_the_stages_and_command_line_overrides(tmp_path):
    recipe = write_pipeline(tmp_path / "pipeline.yaml", tmp_path / "run", tiny_stages())
    pipeline = load_pipeline(recipe, ["--root", str(tmp_path / "elsewhere")])
    assert pipeline.root == str(tmp_path / "elsewhere")
    assert list(pipeline.stages) == ["clean", "train", "distill"]
    distill = pipeline.stages["distill"]
    assert isinstance(distill, Stage) and distill.command == "fit" and distill.launch == "auto"
    assert distill.configs == ["recipes/fashion_mnist/distill.yaml"]
    assert distill.inputs == {"model.init_args.teacher": "train.best_checkpoint"}
    assert distill.overrides["model.init_args.student.init_args.channels"] == [8, 16]
    with pytest.raises(ConfigError, match=r"unknown key `stage`. \(did you mean `stages`\?\)"):
        load_pipeline(
            write_pipeline(tmp_path / "bad.yaml", tmp_path / "run", tiny_stages(), stage={})
        )
