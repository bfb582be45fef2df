"""Evaluation on 2 CPU processes (gloo) with uneven shards: 513 validation and test records,
batch 256 per rank, so rank 0 holds 257 records (2 batches) and rank 1 256 (1 batch) unless
the loader pads. The DDP and the FSDP2 run are one launch of ``tests/evaluation/eval_fit.py``
(a module-scoped fixture: the two runs one after the other in the same two processes, each with
its own Trainer and out folder) in a subprocess of its own session (Lightning's DDP launcher
re-runs the script for rank 1), killed whole on timeout so a hang fails the tests instead of
blocking them; the one-device reference runs the script's ``main`` in the test's process."""

import csv
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, isolated_process_state
from tests.evaluation import eval_fit
from tests.training.distributed_fit import join_runs

SCRIPT = REPO / "tests" / "evaluation" / "eval_fit.py"
RECORDS = 513


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "images.npz"
    np.savez(
        path,
        x=rng.integers(0, 256, (2 * RECORDS, 8, 8), dtype=np.uint8),
        y=rng.integers(0, 3, 2 * RECORDS),
        x_test=rng.integers(0, 256, (RECORDS, 8, 8), dtype=np.uint8),
        y_test=rng.integers(0, 3, RECORDS),
    )
    return path


def run(root, strategies, data, timeout=300):
    """The script's result.json, metrics.json and predictions.csv rows for each of
    ``strategies`` (run in one launch, each in ``root / strategy``)."""
    args = join_runs([["--strategy", strategy, "--data", data, "--out", root / strategy]
                      for strategy in strategies])  # fmt: skip
    if strategies == ["single"]:  # no launcher: in this process, without a start-up of its own
        with isolated_process_state():
            eval_fit.main(args)
        return {"single": outputs(root / "single")}
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [sys.executable, str(SCRIPT), *args]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # rank 1 too: it is in the same session
        proc.communicate()
        pytest.fail(f"{strategies} evaluation hung (killed after {timeout} s)")
    assert proc.returncode == 0, stderr[-3000:]
    assert "terminate called" not in stderr, stderr[-3000:]  # rank 1's abort would show here
    return {strategy: outputs(root / strategy) for strategy in strategies}


def outputs(out):
    result = json.loads((out / "result.json").read_text())
    report = json.loads((out / "metrics.json").read_text())
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return result, report, rows


@pytest.fixture(scope="module")
def single(tmp_path_factory, data):
    return run(tmp_path_factory.mktemp("single"), ["single"], data)["single"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory, data):
    """The DDP and FSDP2 runs, one launch; and the folder of each."""
    root = tmp_path_factory.mktemp("launched")
    runs = run(root, ["ddp", "fsdp2"], data)
    return {strategy: (*runs[strategy], root / strategy) for strategy in runs}


@pytest.mark.slow
def test_fsdp2_evaluation_with_uneven_shards_finishes_and_counts_every_record_once(
    launched, single
):
    result, report, rows, _ = launched["fsdp2"]
    one_result, one_report, one_rows = single
    assert result["val_records"] == RECORDS
    assert np.array(report["confusion_matrix"]).sum() == RECORDS
    assert report["confusion_matrix"] == one_report["confusion_matrix"]
    # the mean over the 513 records, not over ranks or batches
    assert result["fit_val_loss"] == pytest.approx(one_result["fit_val_loss"], abs=1e-6)
    assert result["validate"]["val/loss"] == pytest.approx(one_result["fit_val_loss"], abs=1e-6)
    for key in ("loss", "accuracy", "f1", "auroc"):
        assert report["metrics"][key] == pytest.approx(one_report["metrics"][key], abs=1e-6), key
    assert len(rows) == RECORDS


@pytest.mark.slow
def test_ddp_predictions_are_one_file_with_every_record_and_its_source_once(launched, single):
    _, _, rows, folder = launched["ddp"]
    _, _, one_rows = single
    assert (folder / "predictions.csv").exists()
    assert not list(folder.glob("predictions-rank*.csv"))
    assert [r["index"] for r in rows] == [str(i) for i in range(RECORDS)]
    assert [r["source"] for r in rows] == [f"images.npz:x_test[{i}]" for i in range(RECORDS)]
    assert [r["source"] for r in rows] == [r["source"] for r in one_rows]
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in one_rows]
    assert [r["label"] for r in rows] == [r["label"] for r in one_rows]
    for row, one in zip(rows, one_rows, strict=True):
        for name in ("prob_0", "prob_1", "prob_2"):
            assert abs(float(row[name]) - float(one[name])) < 2e-6


@pytest.mark.parametrize("size", [513, 1, 6])
def test_sharded_evaluation_loaders_give_every_rank_the_same_batches_and_each_record_once(
    monkeypatch, size
):
    import torch

    from lifecycle.data.loading import EpochSampler, make_loader, real_records
    from lifecycle.data.tabular import TabularDataset

    dataset = TabularDataset(np.arange(size, dtype=np.float32)[:, None], np.arange(size), "label")
    monkeypatch.setattr(EpochSampler, "num_replicas", property(lambda self: 2))
    seen, steps = [], []
    for rank in (0, 1):
        monkeypatch.setattr(EpochSampler, "rank", property(lambda self, r=rank: r))
        loader = make_loader(dataset, batch_size=256, shuffle=False, num_workers=0, seed=0)
        batches = list(loader)
        steps.append((len(loader), len(batches)))
        for batch in batches:
            (labels,) = real_records(batch, batch["label"])
            seen += labels.tolist()
            if "padding" in batch:  # stand-ins are real records' copies, flagged
                assert len(batch["padding"]) == len(batch["label"])
    batches_per_rank = math.ceil(math.ceil(size / 2) / 256)  # 513 records: 257 a rank, 2 batches
    assert steps == [(batches_per_rank, batches_per_rank)] * 2
    assert sorted(seen) == list(range(size))
    assert torch.equal(real_records({"x": torch.ones(2)}, torch.arange(2))[0], torch.arange(2))
