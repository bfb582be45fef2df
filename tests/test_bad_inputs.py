"""The catalogue of bad inputs of ``benchmarks/bad_inputs.py``, run in-process through
``lifecycle.cli.main``: each ends in a short message naming what is wrong and the fix, without
a traceback (or, where the policy is to skip and list, exits 0 and lists what it left out)."""

import pytest

from benchmarks.bad_inputs import CASES, run_in_process

# cases that train one short epoch (they exit 0 after listing what they left out)
TRAINING = {case.name for case in CASES if case.exit_zero}


def _param(case):
    marks = [pytest.mark.slow] if case.name in TRAINING else []
    return pytest.param(case, marks=marks, id=case.name)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_gets_a_clear_message(case, tmp_path):
    row, output = run_in_process(case, tmp_path / case.name)
    assert not row["traceback"], output[-3000:]
    assert row["rc"] == (0 if case.exit_zero else 2), output[-3000:]
    assert not row["missing"], f"{row['message']}\n{output[-3000:]}"
    assert row["clear"]


def test_catalogue_covers_what_issue_18_lists():
    names = {case.name for case in CASES}
    assert len(CASES) >= 30 and len(names) == len(CASES)
    for needed in (
        "corrupt_image", "truncated_image", "empty_image", "stray_non_image_file",
        "mixed_sizes_without_image_size", "nan_inf_pixels", "empty_test_split",
        "labels_out_of_range", "csv_without_target_column", "blank_texts", "blank_labels",
        "wrong_num_classes", "config_key_typo", "config_value_typo", "missing_config_file",
        "unknown_class_path", "missing_checkpoint", "truncated_checkpoint",
        "ckpt_last_without_earlier_run", "cleaned_manifest_of_another_dataset",
        "load_backbone_on_tokenizer_folder", "hostile_backbone_manifest",
        "tokenizer_larger_than_embedding",
    ):  # fmt: skip
        assert needed in names


def test_a_failure_inside_the_trainer_marks_its_run_folder_failed(tmp_path):
    """wrong_num_classes fails in the stage's setup, inside Trainer.fit, after the run folder
    exists: the message stays short and the folder says FAILED."""
    case = next(c for c in CASES if c.name == "wrong_num_classes")
    row, output = run_in_process(case, tmp_path)
    assert row["rc"] == 2 and row["message"].startswith("lifecycle fit: error: The data has 10")
    (failed,) = (tmp_path / "runs").glob("*/version_*/FAILED")
    kind, message = failed.read_text().split("\n", 1)
    assert kind == "lifecycle.errors.ConfigError" and "num_classes: 10" in message
    assert not list(failed.parent.glob("checkpoints/*.ckpt"))
