"""Bad inputs through the real ``lifecycle`` command: does each mistake end in a message a person
can act on?

    python benchmarks/bad_inputs.py            # every case, each in its own `python -m lifecycle`
    python benchmarks/bad_inputs.py --jobs 2   # two at a time

Each :class:`Case` builds its tiny data in a temporary folder (digits/tabular/text recipes with
one short epoch) and names the substrings its output must hold: the file or config field that is
wrong, and the fix. A case is *clear* when the command exits non-zero (or, for a case whose
policy is to skip and list, exits 0), prints no ``Traceback``, and the output holds every
expected substring (case-insensitive). Writes ``benchmarks/results/bad_inputs.json``: ``cases``,
``clear``, ``tracebacks`` and a row per case. ``tests/test_bad_inputs.py`` runs the same
catalogue in-process (:func:`run_in_process`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
QUICK = [
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
    "--trainer.limit_test_batches", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--trainer.log_every_n_steps", "1",
    "--test_after_fit", "false",
]  # fmt: skip
ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        name: short identifier (also the case's folder name).
        build: given an empty folder, writes the case's data there and returns the command's
            arguments (after ``lifecycle``).
        expect: substrings the output must hold (case-insensitive): what is wrong and the fix.
        exit_zero: the policy is to skip the bad part, list it and go on (exit 0).
    """

    name: str
    build: Callable[[Path], list[str]]
    expect: tuple[str, ...]
    exit_zero: bool = False


# ----------------------------------------------------------------------------- tiny data
def _images(root: Path, sizes: dict[str, list[int]] | None = None, per_class: int = 12) -> Path:
    """An image folder of two classes (``a``, ``b``) of 8x8 grey PNGs; ``sizes`` overrides the
    side of some images (``{"a": [12]}``: the first image of ``a`` is 12x12)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        sides = (sizes or {}).get(label, [])
        for i in range(per_class):
            side = sides[i] if i < len(sides) else 8
            pixels = rng.integers(0, 255, (side, side), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def _digits(work: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(RECIPES / "digits/classify.yaml"),
        "--trainer.default_root_dir", str(work / "runs"), *QUICK, *extra,
    ]  # fmt: skip


def _folder_fit(work: Path, folder: Path, *extra: str) -> list[str]:
    return _digits(
        work,
        "--data.init_args.dataset", str(folder),
        "--data.init_args.batch_size", "4",
        "--data.init_args.val_fraction", "0.2",
        "--data.init_args.test_fraction", "0.2",
        "--model.init_args.num_classes", "2",
        *extra,
    )  # fmt: skip


def _tabular(work: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(RECIPES / "tabular/regression.yaml"),
        "--trainer.default_root_dir", str(work / "runs"), *QUICK, *extra,
    ]  # fmt: skip


def _table(work: Path, rows: list[str], header: str = "a,b,c,price") -> Path:
    path = work / "table.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _clean_rows(n: int = 30) -> list[str]:
    rng = np.random.default_rng(0)
    return [",".join(f"{v:.3f}" for v in rng.normal(size=4)) for _ in range(n)]


def _table_fit(work: Path, path: Path, *extra: str) -> list[str]:
    return _tabular(
        work,
        "--data.init_args.dataset", str(path),
        "--data.init_args.target", "price",
        "--model.init_args.backbone.init_args.in_features", "3",
        *extra,
    )  # fmt: skip


def _text_csv(work: Path, rows: list[tuple[str, str]] | None = None) -> Path:
    import csv

    words = "good bad fine awful great poor nice ugly happy sad".split()
    rng = np.random.default_rng(0)
    if rows is None:
        rows = [(" ".join(rng.choice(words, 6)), "pos" if i % 2 else "neg") for i in range(60)]
    path = work / "texts.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def _text_fit(work: Path, path: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(RECIPES / "tweets/classify_cnn.yaml"),
        "--trainer.default_root_dir", str(work / "runs"), *QUICK,
        "--data.init_args.dataset", str(path),
        "--data.init_args.vocab_size", "300",
        "--data.init_args.batch_size", "8",
        "--model.init_args.num_classes", "2",
        "--model.init_args.backbone.init_args.vocab_size", "300",
        "--model.init_args.backbone.init_args.embedding_dim", "8",
        "--model.init_args.backbone.init_args.num_filters", "4",
        *extra,
    ]  # fmt: skip


def _checkpoint(work: Path) -> Path:
    """A real checkpoint-shaped file (a torch.save zip archive)."""
    import torch

    path = work / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(256, 256)}, "epoch": 0}, path)
    return path


def _pretrained(work: Path) -> Path:
    """A pretrained-backbone folder as a pretraining run writes it."""
    from lifecycle.artifacts import save_backbone
    from lifecycle.models import SmallCNN

    folder = work / "pretrained"
    save_backbone(folder, SmallCNN(in_channels=1, channels=[4], convs_per_block=1, hidden=8))
    return folder


def _with_backbone(work: Path, folder: Path) -> list[str]:
    return _digits(
        work,
        "--model.init_args.backbone", "lifecycle.artifacts.load_backbone",
        "--model.init_args.backbone.init_args.path", str(folder),
    )  # fmt: skip


# ----------------------------------------------------------------------------- the cases
def _corrupt_image(work: Path) -> list[str]:
    folder = _images(work / "images")
    (folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    return _folder_fit(work, folder)


def _truncated_image(work: Path) -> list[str]:
    from PIL import Image

    folder = _images(work / "images")
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(folder / "a" / "cut.png")
    data = (folder / "a" / "cut.png").read_bytes()
    (folder / "a" / "cut.png").write_bytes(data[: len(data) // 2])
    return _folder_fit(work, folder)


def _empty_image(work: Path) -> list[str]:
    folder = _images(work / "images")
    (folder / "b" / "empty.png").write_bytes(b"")
    return _folder_fit(work, folder)


def _stray_file(work: Path) -> list[str]:
    folder = _images(work / "images")
    (folder / "a" / "notes.txt").write_text("where these images came from\n")
    return _folder_fit(work, folder)


def _mixed_sizes(work: Path) -> list[str]:
    return _folder_fit(work, _images(work / "images", sizes={"a": [12, 16]}))


def _empty_test_split(work: Path) -> list[str]:
    _images(work / "images" / "train")
    for label in ("a", "b"):
        (work / "images" / "test" / label).mkdir(parents=True)
    return _folder_fit(work, work / "images")


def _empty_val_split(work: Path) -> list[str]:
    folder = _images(work / "images", per_class=3)
    return _folder_fit(work, folder, "--data.init_args.val_fraction", "0.01")


def _nan_images(work: Path) -> list[str]:
    x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32) * 255
    x[3, 2, 2] = np.nan
    x[5, 0, 0] = np.inf
    np.savez(work / "pixels.npz", x=x, y=np.arange(40) % 2)
    return _folder_fit(work, work / "pixels.npz")


def _labels_out_of_range(work: Path) -> list[str]:
    x = np.random.default_rng(0).integers(0, 255, (40, 8, 8), dtype=np.uint8)
    y = np.arange(40) % 2
    y[7] = -3
    np.savez(work / "pixels.npz", x=x, y=y)
    return _folder_fit(work, work / "pixels.npz")


def _wrong_num_classes(work: Path) -> list[str]:
    return _digits(work, "--model.init_args.num_classes", "5")


def _nan_table(work: Path) -> list[str]:
    rows = _clean_rows()
    rows[4] = "0.1,nan,0.3,1.0"
    return _table_fit(work, _table(work, rows))


def _inf_table(work: Path) -> list[str]:
    rows = _clean_rows()
    rows[6] = "0.1,0.2,inf,1.0"
    return _table_fit(work, _table(work, rows))


def _missing_target_column(work: Path) -> list[str]:
    path = _table(work, _clean_rows(), header="a,b,c,cost")
    return _table_fit(work, path)


def _missing_feature_column(work: Path) -> list[str]:
    path = _table(work, _clean_rows())
    return _table_fit(work, path, "--data.init_args.features", "[a, b, weight]")


def _text_column_missing(work: Path) -> list[str]:
    return _text_fit(work, _text_csv(work), "--data.init_args.text_column", "tweet")


def _blank_texts(work: Path) -> list[str]:
    rows = [
        (f"good text number {i}" if i % 7 else "   ", "pos" if i % 2 else "neg") for i in range(60)
    ]
    return _text_fit(work, _text_csv(work, rows))


def _blank_labels(work: Path) -> list[str]:
    rows = [(f"text number {i}", ("pos" if i % 2 else "neg") if i % 9 else "") for i in range(60)]
    return _text_fit(work, _text_csv(work, rows))


def _tokenizer_too_big(work: Path) -> list[str]:
    return _text_fit(work, _text_csv(work), "--model.init_args.backbone.init_args.vocab_size", "20")


def _tokenizer_folder_missing(work: Path) -> list[str]:
    return _text_fit(
        work, _text_csv(work), "--data.init_args.tokenizer", str(work / "no_tokenizer")
    )


def _config_key_typo(work: Path) -> list[str]:
    return _digits(work, "--model.init_args.num_clases", "3")


def _config_value_typo(work: Path) -> list[str]:
    return _digits(work, "--model.init_args.num_classes", "ten")


def _config_choice_typo(work: Path) -> list[str]:
    return _tabular(work, "--data.init_args.task", "regresion")


def _trainer_key_typo(work: Path) -> list[str]:
    return _digits(work, "--trainer.max_epocs", "3")


def _yaml_typo(work: Path) -> list[str]:
    config = work / "mine.yaml"
    config.write_text("model:\n  init_args:\n    num_clases: 10\n")
    return _digits(work, "--config", str(config))


def _missing_config(work: Path) -> list[str]:
    return ["fit", "--config", str(work / "recipes/nope.yaml")]


def _unknown_class(work: Path) -> list[str]:
    return _digits(work, "--model.init_args.backbone", "lifecycle.models.NoSuchNet")


def _unknown_module(work: Path) -> list[str]:
    return _digits(work, "--data", "my_project.data.MyData")


def _bad_value_range(work: Path) -> list[str]:
    return _digits(work, "--data.init_args.val_fraction", "1.5")


def _bad_num_classes_value(work: Path) -> list[str]:
    return _digits(work, "--model.init_args.num_classes", "1")


def _missing_dataset(work: Path) -> list[str]:
    return _digits(work, "--data.init_args.dataset", str(work / "my_images"))


def _misspelt_builtin(work: Path) -> list[str]:
    return _digits(work, "--data.init_args.dataset", "fashion_mnist")


def _missing_checkpoint(work: Path) -> list[str]:
    return _digits(work, "--ckpt_path", str(work / "runs/old/version_0/checkpoints/last.ckpt"))


def _truncated_checkpoint(work: Path) -> list[str]:
    path = _checkpoint(work)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return _digits(work, "--ckpt_path", str(path))


def _empty_checkpoint(work: Path) -> list[str]:
    path = work / "model.ckpt"
    path.write_bytes(b"")
    return ["test", *_digits(work, "--ckpt_path", str(path))[1:]]


def _ckpt_last_no_run(work: Path) -> list[str]:
    return _digits(work, "--ckpt_path", "last")


def _ckpt_last_after_failed_run(work: Path) -> list[str]:
    """An earlier run of this recipe failed before its first checkpoint (its folder has only
    FAILED): ``last`` must not resume it."""
    failed = work / "runs" / "digits-classify" / "version_0"
    failed.mkdir(parents=True)
    (failed / "FAILED").write_text("lifecycle.errors.DataError\nlabels out of range\n")
    return _digits(work, "--ckpt_path", "last")


def _ckpt_last_for_test(work: Path) -> list[str]:
    return ["test", *_digits(work, "--ckpt_path", "last")[1:]]


def _foreign_manifest(work: Path) -> list[str]:
    manifest = work / "manifest.csv"
    manifest.write_text(
        "source,label,weight,original_label\n"
        + "".join(f"tweets:{i},pos,1.0,pos\n" for i in range(20))
    )
    return _digits(work, "--data.init_args.cleaned_manifest", str(manifest))


def _manifest_without_columns(work: Path) -> list[str]:
    manifest = work / "manifest.csv"
    manifest.write_text("path,class\na/0.png,a\n")
    return _digits(work, "--data.init_args.cleaned_manifest", str(manifest))


def _backbone_from_tokenizer_folder(work: Path) -> list[str]:
    folder = work / "tokenizer"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text("{}")
    return _with_backbone(work, folder)


def _backbone_manifest_other_format(work: Path) -> list[str]:
    folder = _pretrained(work)
    manifest = folder / "lifecycle_pretrained.json"
    spec = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**spec, "format": "some-other-tool"}))
    return _with_backbone(work, folder)


def _hostile_manifest(work: Path) -> list[str]:
    folder = _pretrained(work)
    manifest = folder / "lifecycle_pretrained.json"
    spec = json.loads(manifest.read_text())
    spec["backbone"] = {"class_path": "os.system", "init_args": {"command": "echo pwned"}}
    manifest.write_text(json.dumps(spec))
    return _with_backbone(work, folder)


def _backbone_folder_missing(work: Path) -> list[str]:
    return _with_backbone(work, work / "runs/pretrain/version_0/pretrained")


def _unknown_subcommand(work: Path) -> list[str]:
    return ["train", "--config", str(RECIPES / "digits/classify.yaml")]


CASES: tuple[Case, ...] = (
    Case("corrupt_image", _corrupt_image, ("broken.png", "remove or replace")),
    Case("truncated_image", _truncated_image, ("cut.png", "truncated", "remove or replace")),
    Case("empty_image", _empty_image, ("empty.png", "remove or replace")),
    Case("stray_non_image_file", _stray_file, ("notes.txt",), exit_zero=True),
    Case("mixed_sizes_without_image_size", _mixed_sizes, ("image_size", "0.png")),
    Case("empty_test_split", _empty_test_split, ("test", "no images")),
    Case("empty_val_split", _empty_val_split, ("val_fraction",)),
    Case("nan_inf_pixels", _nan_images, ("pixels.npz", "nan")),
    Case("labels_out_of_range", _labels_out_of_range, ("pixels.npz", "-3")),
    Case("wrong_num_classes", _wrong_num_classes, ("num_classes", "10")),
    Case("nan_row_in_table", _nan_table, ("table.csv", "missing")),
    Case("inf_row_in_table", _inf_table, ("table.csv", "inf")),
    Case("csv_without_target_column", _missing_target_column, ("price", "cost")),
    Case("csv_without_feature_column", _missing_feature_column, ("weight", "features")),
    Case("text_csv_without_text_column", _text_column_missing, ("tweet", "text_column")),
    Case("blank_texts", _blank_texts, ("texts.csv", "empty", "data_issues.csv"), exit_zero=True),
    Case("blank_labels", _blank_labels, ("texts.csv", "empty label", "data_issues.csv"), exit_zero=True),
    Case("tokenizer_larger_than_embedding", _tokenizer_too_big, ("vocab_size", "20")),
    Case("tokenizer_folder_missing", _tokenizer_folder_missing, ("no_tokenizer", "tokenizer")),
    Case("config_key_typo", _config_key_typo, ("num_clases", "not accepted")),
    Case("config_value_typo", _config_value_typo, ("num_classes", "ten")),
    Case("config_choice_typo", _config_choice_typo, ("regresion", "classification")),
    Case("trainer_key_typo", _trainer_key_typo, ("max_epocs", "unrecognized")),
    Case("yaml_file_key_typo", _yaml_typo, ("num_clases", "not accepted")),
    Case("missing_config_file", _missing_config, ("nope.yaml", "does not exist")),
    Case("unknown_class_path", _unknown_class, ("NoSuchNet",)),
    Case("unknown_module_in_class_path", _unknown_module, ("my_project.data.MyData",)),
    Case("fraction_out_of_range", _bad_value_range, ("val_fraction", "1.5")),
    Case("num_classes_below_two", _bad_num_classes_value, ("num_classes", ">= 2")),
    Case("missing_dataset_folder", _missing_dataset, ("my_images", "fix")),
    Case("misspelt_builtin_dataset", _misspelt_builtin, ("fashion_mnist", "fashion-mnist")),
    Case("missing_checkpoint", _missing_checkpoint, ("last.ckpt", "no such file", "fix")),
    Case("truncated_checkpoint", _truncated_checkpoint, ("model.ckpt", "truncated", "fix")),
    Case("empty_checkpoint_for_test", _empty_checkpoint, ("model.ckpt", "truncated", "fix")),
    Case("ckpt_last_without_earlier_run", _ckpt_last_no_run, ("digits-classify", "drop --ckpt_path")),
    Case("ckpt_last_after_failed_run", _ckpt_last_after_failed_run, ("version_0", "FAILED", "drop --ckpt_path")),
    Case("ckpt_last_for_test", _ckpt_last_for_test, ("--ckpt_path last", "checkpoints/last.ckpt")),
    Case("cleaned_manifest_of_another_dataset", _foreign_manifest, ("manifest.csv", "tweets:0", "lifecycle clean")),
    Case("cleaned_manifest_without_columns", _manifest_without_columns, ("manifest.csv", "source")),
    Case("load_backbone_on_tokenizer_folder", _backbone_from_tokenizer_folder, ("tokenizer", "lifecycle_pretrained.json")),
    Case("backbone_manifest_of_another_format", _backbone_manifest_other_format, ("some-other-tool", "lifecycle_pretrained.json")),
    Case("hostile_backbone_manifest", _hostile_manifest, ("os.system", "refused")),
    Case("backbone_folder_missing", _backbone_folder_missing, ("pretrained", "does not exist")),
    Case("unknown_subcommand", _unknown_subcommand, ("train", "fit")),
)  # fmt: skip


# ----------------------------------------------------------------------------- running
def first_error_line(output: str) -> str:
    """The line of the output that states the error (``... error: ...``), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("lifecycle") and ": error:" in line:
            return line
    for line in lines:
        if line.startswith("error:") or ": error:" in line:
            return line
    return lines[-1] if lines else ""


def listing_line(output: str, expected: str) -> str:
    """The first line of a successful run's output that lists what it left out (the line
    naming ``expected``)."""
    lines = [line.strip() for line in output.splitlines()]
    return next((line for line in lines if expected.lower() in line.lower()), "")


def judge(case: Case, command: list[str], rc: int, output: str) -> dict:
    """A case's row: whether it is clear (see the module docstring)."""
    lowered = output.lower()
    found = {s: s.lower() in lowered for s in case.expect}
    exit_ok = rc == 0 if case.exit_zero else rc != 0
    traceback_shown = "Traceback (most recent call last)" in output
    return {
        "name": case.name,
        "command": "lifecycle " + " ".join(command),
        "rc": rc,
        "expected": list(case.expect),
        "missing": [s for s, ok in found.items() if not ok],
        "exit_zero_expected": case.exit_zero,
        "traceback": traceback_shown,
        "message": listing_line(output, case.expect[0]) if rc == 0 else first_error_line(output),
        "clear": exit_ok and not traceback_shown and all(found.values()),
    }


def run_subprocess(case: Case, work: Path, timeout: float = 300) -> tuple[dict, str]:
    """Run a case through ``python -m lifecycle`` in ``work``; returns its row and output."""
    work.mkdir(parents=True, exist_ok=True)
    command = case.build(work)
    proc = subprocess.run(
        [sys.executable, "-m", "lifecycle", *command],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV, "PYTHONPATH": str(REPO)},
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    return judge(case, command, proc.returncode, output), output


def run_in_process(case: Case, work: Path) -> tuple[dict, str]:
    """Run a case through :func:`lifecycle.cli.main` in this process (stdout, stderr and
    logging captured); an exception that escapes ``main`` counts as a traceback, exit 1."""
    from lifecycle.cli import main

    work.mkdir(parents=True, exist_ok=True)
    command = case.build(work)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    root = logging.getLogger()
    root.addHandler(handler)
    rc = 0
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = lambda m, c, f, n, file=None, line=None: buffer.write(
                    f"{c.__name__}: {m}\n"
                )
                main(command)
    except SystemExit as exit_:
        rc = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            buffer.write(exit_.code + "\n")
    except Exception:
        rc = 1
        buffer.write(traceback.format_exc())
    finally:
        root.removeHandler(handler)
    output = buffer.getvalue()
    return judge(case, command, rc, output), output


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once")
    parser.add_argument("--only", nargs="*", help="names of the cases to run")
    parser.add_argument("--show", action="store_true", help="print each case's output tail")
    options = parser.parse_args(argv)
    cases = [c for c in CASES if not options.only or c.name in options.only]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:

        def one(case: Case) -> dict:
            row, output = run_subprocess(case, Path(tmp) / case.name)
            print(f"{'clear  ' if row['clear'] else 'UNCLEAR'} {case.name}: {row['message'][:150]}")
            if options.show or not row["clear"]:
                print("    " + "\n    ".join(output.strip().splitlines()[-6:]))
            return row

        with ThreadPoolExecutor(max_workers=options.jobs) as pool:
            rows = list(pool.map(one, cases))
    result = {
        "cases": len(rows),
        "clear": sum(r["clear"] for r in rows),
        "tracebacks": sum(r["traceback"] for r in rows),
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
        "protocol": {
            "seeds": [],
            "seeds_note": "none: each case is a deterministic check of one command's exit "
            "status and output, not a trained figure",
            "selection": "none: nothing is compared or chosen",
            "selection_runs_per_side": 0,
            "budget": "each case one `python -m lifecycle` command on its own tiny data (one "
            "short epoch where it trains)",
        },
    }
    if options.only:
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
        return result
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import write_result

    write_result("bad_inputs", result)
    return result


if __name__ == "__main__":
    # run as a script, Python puts benchmarks/ first on sys.path, where benchmarks/lifecycle.py
    # would shadow the package the cases import (as benchmarks/common.py does for the others)
    sys.path.insert(0, str(REPO))
    main()
