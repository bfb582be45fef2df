"""``lifecycle tune lr|batch-size|sweep``: the command line of the tuning stage.

Each takes a ``fit`` recipe (``--config RECIPE`` and any override of its fields) and its own
options; ``lifecycle tune <action> --help`` lists them. The finders write into ``--root``
(default ``runs/<recipe folder>-<recipe file>-tune``); the sweep into its own folder (see
:mod:`lifecycle.tuning.sweep`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lifecycle.errors import ConfigError
from lifecycle.pipeline.runner import ConfigRefused, StageCommands, print_config
from lifecycle.tuning.finders import TuneCommands, find_batch_size, find_lr
from lifecycle.tuning.sweep import default_root, sweep_command

ACTIONS = ("lr", "batch-size", "sweep")


def _parser(action: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"lifecycle tune {action}",
        allow_abbrev=False,
        description={
            "lr": "Lightning's learning-rate range test on a recipe's model and data, on one "
            "device; writes lr_find.png, lr.json and lr.yaml (add it with --config).",
            "batch-size": "The batch size that fits (GPU) or trains fastest (CPU) on one "
            "device; writes batch_size.json, batch_size.png and batch_size.yaml.",
        }[action]
        + " Any other option is the recipe's (--config RECIPE, --model..., --data...).",
    )
    parser.add_argument(
        "--root", default=None, help="the folder to write into (default: runs/<recipe>-tune)"
    )
    if action == "lr":
        parser.add_argument("--min_lr", type=float, default=1e-6)
        parser.add_argument("--max_lr", type=float, default=1.0)
        parser.add_argument("--num_training", type=int, default=100, help="steps of the test")
        parser.add_argument("--mode", choices=("exponential", "linear"), default="exponential")
        parser.add_argument("--early_stop_threshold", type=float, default=4.0,
                            help="stop once the loss exceeds this times the best (0: never)")  # fmt: skip
        parser.add_argument("--rule", choices=("log", "lightning"), default="log",
                            help="log: the steepest fall per step of the log-spaced sweep; "
                            "lightning: Lightning's suggestion() (the gradient against the rate)")  # fmt: skip
    else:
        parser.add_argument("--mode", choices=("auto", "memory", "throughput"), default="auto",
                            help="memory: the largest that fits (GPU); throughput: the most "
                            "samples per second; auto: memory on a GPU, else throughput")  # fmt: skip
        parser.add_argument("--min_size", type=int, default=16)
        parser.add_argument("--max_size", type=int, default=1024)
        parser.add_argument("--steps", type=int, default=10, help="steps timed per size")
        parser.add_argument("--warmup", type=int, default=3, help="untimed steps per size")
        parser.add_argument("--scale_lr", choices=("none", "linear", "sqrt"), default="none",
                            help="move the learning rate with the batch size")  # fmt: skip
    return parser


def tune_command(args: list[str], stage: StageCommands, finders: TuneCommands) -> int:
    """``lifecycle tune ACTION ARGS``. Returns the exit status.

    Raises:
        ConfigError: an unknown action, a missing recipe, or a mistake in the options.
    """
    if not args or args[0] not in ACTIONS:
        given = f"`{args[0]}`" if args else "nothing"
        raise ConfigError(
            f"lifecycle tune needs an action, got {given}. Valid: {', '.join(ACTIONS)}, e.g. "
            "lifecycle tune lr --config recipes/fashion_mnist/classify.yaml; or the stage form, "
            "a recipe with a `tuning:` section: lifecycle tune --config RECIPE --config "
            "recipes/digits/tune.yaml"
        )
    action, rest = args[0], args[1:]
    if action == "sweep":
        return sweep_command(rest, stage)
    known, recipe_args = _parser(action).parse_known_args(rest)
    if not any(a == "--config" or a.startswith("--config=") for a in recipe_args):
        raise ConfigError(
            f"give the recipe to tune: lifecycle tune {action} --config "
            "recipes/<dataset>/<recipe>.yaml, e.g. recipes/fashion_mnist/classify.yaml"
        )
    try:
        config = print_config(stage, ["fit", *recipe_args])
    except ConfigRefused as refused:
        raise ConfigError(f"the recipe ({' '.join(recipe_args)}): {refused}") from None
    root = Path(known.root) if known.root else default_root(recipe_args, "-tune")
    if action == "lr":
        result = find_lr(
            finders, recipe_args, config, root, known.min_lr, known.max_lr, known.num_training,
            known.mode, known.early_stop_threshold or None, known.rule,
        )  # fmt: skip
        print(f"suggested learning rate: {result['suggestion']:.4g} (searched on "
              f"{result['searched_on']}); wrote {', '.join(result.get('files', []))}")  # fmt: skip
        return 0
    result = find_batch_size(
        finders, recipe_args, config, root, known.mode, known.min_size, known.max_size,
        known.steps, known.warmup, known.scale_lr,
    )  # fmt: skip
    if result["mode"] == "throughput":
        for row in result["tried"]:
            mark = " <- chosen" if row["batch_size"] == result["batch_size"] else ""
            print(
                f"  batch {row['batch_size']:>5}: {row['samples_per_second']:>9.1f} samples/s{mark}"
            )
    print(f"batch size: {result['batch_size']} ({result['mode']}; the recipe had "
          f"{result['recipe_batch_size']}; searched on {result['searched_on']}); wrote "
          f"{', '.join(result.get('files', []))}")  # fmt: skip
    return 0
