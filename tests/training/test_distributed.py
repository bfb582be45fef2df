"""DDP and FSDP2 on two CPU processes (gloo): the same steps as one device, clipping by norm and
by value, gradient accumulation, a partly frozen model, GradientHealth on sharded gradients, and
clean exits. Each run is ``tests/training/distributed_fit.py`` in a subprocess (Lightning's DDP
launcher re-runs the script for rank 1, which pytest's own command line cannot be)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "tests" / "training" / "distributed_fit.py"


def exited_cleanly(proc, strategy: str) -> bool:
    """Exit code 0; for FSDP2 also the known, still open abort at interpreter exit (gloo's
    ``terminate called without an active exception``, seen once in about 20 FSDP2 runs on CPU,
    after the run finished and wrote its results; README "Scaling", known issue). DDP must exit
    with 0: its fix (``DDPStrategy``) is what ``benchmarks/scale.py`` measures."""
    if proc.returncode == 0:
        return True
    known = "terminate called without an active exception" in proc.stderr
    return strategy == "fsdp2" and proc.returncode in (-6, 134) and known


def fit(tmp_path, name, strategy, *args):
    out = tmp_path / name
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--strategy", strategy, "--out", str(out),
                           *map(str, args)], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [
        json.loads((out / f"rank{r}.json").read_text())
        for r in range(1 if strategy == "single" else 2)
    ]
    mean = [sum(r["losses"][i] for r in ranks) / len(ranks) for i in range(len(ranks[0]["losses"]))]
    return ranks, mean


@pytest.mark.slow
def test_ddp_and_fsdp2_take_the_steps_of_one_device_with_clipping_accumulation_and_frozen_layers(
    tmp_path,
):
    # clip at 0.05: far below the gradient norm, so every step is clipped
    common = ["--clip", "0.05", "--accumulate", "2", "--freeze-first", "--steps", "12"]
    single, reference = fit(tmp_path, "single", "single", *common)
    for strategy in ("ddp", "fsdp2"):
        ranks, losses = fit(tmp_path, strategy, strategy, *common)
        assert max(abs(a - b) for a, b in zip(losses, reference, strict=True)) < 1e-5, strategy
        assert ranks[0]["checksum"] == pytest.approx(single[0]["checksum"], abs=1e-4)
        assert all(r["frozen_unchanged"] for r in ranks)
    # FSDP2 really shards: each rank holds half of the parameters
    assert all(r["sharded"] for r in ranks)
    assert ranks[0]["param_bytes"] == single[0]["param_bytes"] // 2
    unclipped = fit(
        tmp_path, "unclipped", "single", "--accumulate", "2", "--freeze-first", "--steps", "12"
    )[1]
    assert abs(unclipped[-1] - reference[-1]) > 1e-3  # clipping changed the run


@pytest.mark.slow
def test_clipping_by_value_under_fsdp2_matches_one_device(tmp_path):
    args = ["--clip", "0.001", "--clip-algorithm", "value", "--steps", "8"]
    _, reference = fit(tmp_path, "single", "single", *args)
    _, losses = fit(tmp_path, "fsdp2", "fsdp2", *args)
    assert max(abs(a - b) for a, b in zip(losses, reference, strict=True)) < 1e-5


@pytest.mark.slow
def test_gradient_health_skips_an_injected_nan_on_every_fsdp2_rank(tmp_path):
    ranks, losses = fit(tmp_path, "nan", "fsdp2", "--nan-at", "3", "--steps", "8")
    for rank in ranks:
        skips = [e for e in rank["events"] if e[1] == "skip"]
        assert [e[0] for e in skips] == [3], rank["events"]
        assert "step 3" in skips[0][2] and "backbone.layers.1" in skips[0][2]
    assert all(l == l for l in losses)  # noqa: E741 - no NaN loss after the skipped step


@pytest.mark.slow
def test_a_backbone_unfrozen_mid_run_stays_in_sync_under_ddp_and_fsdp2(tmp_path):
    """A parameter frozen when DDP wrapped the model is outside DDP's gradient all-reduce: once
    FreezeUnfreeze unfreezes it, each process would step on its own gradients and the replicas
    drift apart (measured without the callback's sync: weight checksums 10.67 vs 8.30). The
    callback averages those gradients; FSDP2 syncs them itself. Both take the same steps."""
    args = ["--finetune", "freeze_unfreeze", "--epoch-steps", "4", "--steps", "12",
            "--optimizer", "adam"]  # fmt: skip
    ddp, _ = fit(tmp_path, "ddp", "ddp", *args)
    fsdp2, _ = fit(tmp_path, "fsdp2", "fsdp2", *args)
    assert ddp[0]["checksum"] == ddp[1]["checksum"]
    assert fsdp2[0]["checksum"] == pytest.approx(ddp[0]["checksum"], abs=1e-4)
    for rank in ddp + fsdp2:
        assert rank["param_groups"] == 2 and not rank["frozen_unchanged"]


@pytest.mark.slow
def test_distillation_takes_the_steps_of_one_device_under_ddp_and_fsdp2(tmp_path):
    """The teacher is a whole replica on every process (outside DDP, not sharded by FSDP2);
    the student and its feature adapter train in sync, and DDP and FSDP2 take the same steps
    (which one device takes too: checked while writing this test, left out for suite time)."""
    args = ["--distill", "--steps", "8", "--hidden", "32", "--optimizer", "adam"]
    ddp, ddp_loss = fit(tmp_path, "ddp", "ddp", *args)
    fsdp2, fsdp2_loss = fit(tmp_path, "fsdp2", "fsdp2", *args)
    assert ddp[0]["checksum"] == ddp[1]["checksum"]
    assert fsdp2[0]["checksum"] == pytest.approx(ddp[0]["checksum"], abs=1e-4)
    assert fsdp2_loss == pytest.approx(ddp_loss, abs=1e-4)
    for rank in ddp + fsdp2:
        assert rank["teacher_unchanged"] and not rank["teacher_sharded"]
    assert all(rank["adapter_sharded"] and rank["sharded"] for rank in fsdp2)
