"""Scale benchmark: FSDP2 memory per rank, DDP equivalence with one device, DDP clean exits.
Two CPU processes (gloo); each run is ``tests/training/distributed_fit.py`` (an MLP on the
digits, no dropout or BatchNorm, so the runs can be compared step by step).

1. ``fsdp_vs_ddp_state_bytes``: bytes of parameters + Adam state held by one rank under FSDP2
   (``FSDP2Strategy``, full shard) over the same under DDP, after 5 steps of the same model
   (MLP 64-1024-1024-10, 1.1M parameters). Target <= 0.55.
2. ``ddp_vs_single_max_loss_diff``: 20 SGD steps, 2 DDP ranks with batch 16 each against one
   device with batch 32, gradients clipped by norm at 0.05 (so clipping acts on every step); the
   largest difference between the one-device loss and the mean of the ranks' losses at any
   step. Target <= 1e-4. The same for FSDP2 is reported too.
3. ``ddp_clean_exits``: ``--runs`` consecutive 2-rank DDP fits launched by ``torchrun`` (which
   waits for both ranks and reports any that dies, e.g. the SIGABRT exits of gloo at shutdown),
   with the toolkit's ``DDPStrategy``; Lightning's own ``DDPStrategy`` alternates with it as the
   baseline. Target: every run clean.

    python benchmarks/scale.py [--runs 20]

Writes ``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "training" / "distributed_fit.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}


def fit(out: Path, strategy: str, *args: str, torchrun: bool = False) -> tuple[int, list[dict]]:
    command = [sys.executable, str(SCRIPT), "--strategy", strategy, "--out", str(out), *args]
    if torchrun:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                   "--master_port", str(29500 + os.getpid() % 1000), *command[1:]]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    if proc.returncode != 0:
        print(f"{strategy} exited with {proc.returncode}: {proc.stderr[-1500:]}", flush=True)
    return proc.returncode, ranks


def mean_losses(ranks: list[dict]) -> list[float]:
    return [sum(r["losses"][i] for r in ranks) / len(ranks) for i in range(len(ranks[0]["losses"]))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="DDP runs for the clean-exit count")
    args = parser.parse_args()
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # 1. state bytes per rank
        big = ["--hidden", "1024", "1024", "--optimizer", "adam", "--steps", "5"]
        held = {}
        for strategy in ("ddp", "fsdp2"):
            rc, ranks = fit(root / f"bytes-{strategy}", strategy, *big)
            assert rc == 0 and len(ranks) == 2, strategy
            held[strategy] = max(r["param_bytes"] + r["optimizer_bytes"] for r in ranks)
        result["state_bytes_per_rank"] = held
        result["fsdp_vs_ddp_state_bytes"] = round(held["fsdp2"] / held["ddp"], 4)
        # 2. the same steps as one device
        clip = ["--clip", "0.05", "--steps", "20"]
        _, single = fit(root / "single", "single", *clip)
        reference = mean_losses(single)
        for strategy in ("ddp", "fsdp2"):
            rc, ranks = fit(root / f"same-{strategy}", strategy, *clip)
            assert rc == 0, strategy
            diff = max(abs(a - b) for a, b in zip(mean_losses(ranks), reference, strict=True))
            result[f"{strategy}_vs_single_max_loss_diff"] = float(f"{diff:.3g}")
        result["single_final_loss"] = round(reference[-1], 6)
        # 3. clean exits, toolkit and Lightning alternating
        exits = {"ddp": [], "lightning-ddp": []}
        seconds = {"ddp": [], "lightning-ddp": []}
        for k in range(args.runs):
            for strategy in exits:
                start = time.perf_counter()
                rc, ranks = fit(
                    root / f"exit-{strategy}-{k}", strategy, "--steps", "20", torchrun=True
                )
                seconds[strategy].append(time.perf_counter() - start)
                exits[strategy].append(
                    rc if len(ranks) == 2 else f"{rc} ({len(ranks)} ranks wrote)"
                )
            print(k, {s: v[-1] for s, v in exits.items()}, flush=True)
        result["ddp_clean_exits"] = sum(rc == 0 for rc in exits["ddp"])
        result["lightning_ddp_clean_exits"] = sum(rc == 0 for rc in exits["lightning-ddp"])
        result["ddp_runs"] = args.runs
        result["exit_codes"] = exits
        result["run_seconds_median"] = {
            s: round(sorted(v)[len(v) // 2], 1) for s, v in seconds.items()
        }
    result["targets"] = {
        "fsdp_vs_ddp_state_bytes": "<= 0.55",
        "ddp_vs_single_max_loss_diff": "<= 1e-4",
        "ddp_clean_exits": f"== {args.runs}",
    }
    result["meets_target"] = bool(
        result["fsdp_vs_ddp_state_bytes"] <= 0.55
        and result["ddp_vs_single_max_loss_diff"] <= 1e-4
        and result["ddp_clean_exits"] == args.runs
    )
    write_result("scale", result)


if __name__ == "__main__":
    main()
