"""A small fit run as a script, for the distributed tests and ``benchmarks/scale.py``.

``python tests/training/distributed_fit.py --strategy ddp|fsdp2|single --out DIR [...]``: an MLP
on the digits, SGD without dropout or BatchNorm, so one device with a global batch of ``2 x B``
and two ranks with ``B`` each take the very same steps (``--batch-norm`` adds BatchNorm, for
the buffer tests). Every rank writes ``rank<N>.json``: its
per-step losses, the bytes of parameters and optimizer state it holds, a checksum of the full
weights, and what GradientHealth reported. With ``--report-threads`` each rank also writes
``threads<N>.json`` at interpreter exit, after the strategy's exit handler ran: the names of the
threads still alive (gloo's workers are ``pt_gloo_runloop``).

Several fits in one launch (one start-up of both ranks): their arguments separated by ``--then``,
``--strategy ddp --out A [...] --then --strategy ddp --out B [...]``. They run one after the
other in the same processes, each with a Trainer of its own, seeded afresh and writing its own
``--out`` (the first Trainer launches rank 1, which runs the same fits; the process group is set
up once); every fit takes the steps it takes in a launch of its own. The thread reports are
registered before the first Trainer exists, so they run after the exit handler.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from lifecycle.data import ImageClassificationDataModule
from lifecycle.models import MLP
from lifecycle.stages import ClassificationModule
from lifecycle.training.health import GradientHealth
from lifecycle.training.strategies import DDPStrategy, FSDP2Strategy


def local_bytes(tensors) -> int:
    return sum(getattr(t, "_local_tensor", t).numel() * t.element_size() for t in tensors)


class Record(L.Callback):
    """Per-step losses (each rank's own) and the state held by this rank."""

    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


class NaNAt(L.Callback):
    """Turn the gradients of one layer into NaN at one step (an injected fault)."""

    def __init__(self, step: int):
        self.step = step

    def on_after_backward(self, trainer, pl_module):
        if trainer.global_step == self.step:
            weight = pl_module.backbone.layers[1].weight
            weight.grad.mul_(float("nan"))


class RankState(L.Callback):
    """Fill the module's ``rank_state`` buffer with this rank's own value (rank + 1) before
    training, and add to it at each step: state that is each rank's alone."""

    def on_train_start(self, trainer, pl_module):
        pl_module.rank_state.fill_(trainer.global_rank + 1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.rank_state.add_(trainer.global_rank + 1)


def report_threads_at_exit(out: Path, rank: list[int]) -> None:
    """Registered before the Trainer exists, so it runs after the strategy's exit handler."""

    def report():
        tasks = Path("/proc/self/task")
        names = sorted((tasks / t / "comm").read_text().strip() for t in os.listdir(tasks))
        (out / f"threads{rank[0]}.json").write_text(json.dumps(names))

    atexit.register(report)


SEPARATOR = "--then"


def join_runs(runs: list[list]) -> list[str]:
    """One command line for several runs' arguments: joined by ``--then``."""
    args: list[str] = []
    for run in runs:
        args += [*([SEPARATOR] if args else []), *map(str, run)]
    return args


def split_runs(argv: list[str]) -> list[list[str]]:
    """Each run's arguments of a command line made by :func:`join_runs` (one run without a
    ``--then``)."""
    runs: list[list[str]] = [[]]
    for arg in argv:
        if arg == SEPARATOR:
            runs.append([])
        else:
            runs[-1].append(arg)
    return runs


def main(argv: list[str] | None = None) -> None:
    """Run the fits of ``argv`` (one, or several separated by ``--then``) in this process."""
    runs = [parse(chunk) for chunk in split_runs(sys.argv[1:] if argv is None else list(argv))]
    if len({run.strategy == "single" for run in runs}) > 1:
        raise SystemExit("one launch cannot mix --strategy single with multi-rank fits")
    rank = [0]
    for run in runs:
        if run.report_threads:
            report_threads_at_exit(Path(run.out), rank)
    for run in runs:
        fit(run, rank)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--strategy", choices=["single", "ddp", "fsdp2", "lightning-ddp", "lightning-fsdp2"],
        required=True, help="lightning-ddp, lightning-fsdp2: Lightning's own DDPStrategy and "
        "ModelParallelStrategy, without the toolkit's clean exit",
    )  # fmt: skip
    parser.add_argument("--report-threads", action="store_true")
    parser.add_argument(
        "--batch-norm", action="store_true",
        help="BatchNorm after each layer, and a buffer that holds each rank's own value",
    )  # fmt: skip
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="per rank")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--clip", type=float, default=None)
    parser.add_argument("--clip-algorithm", default="norm")
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--freeze-first", action="store_true", help="freeze the first layer")
    parser.add_argument("--nan-at", type=int, default=None)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    parser.add_argument(
        "--finetune", choices=["freeze_unfreeze", "discriminative"], default=None,
        help="a fine-tuning callback (unfreezing at epoch 1)",
    )  # fmt: skip
    parser.add_argument("--epoch-steps", type=int, default=None, help="limit_train_batches")
    parser.add_argument(
        "--distill", action="store_true",
        help="distil a fixed MLP teacher (with a feature adapter) into the model",
    )  # fmt: skip
    return parser.parse_args(argv)


def fit(args: argparse.Namespace, rank: list[int]) -> None:
    """One fit; sets ``rank[0]`` to this process's rank once the Trainer knows it."""
    L.seed_everything(0)
    ranks = 1 if args.strategy == "single" else 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    strategy = {
        "single": lambda: "auto", "ddp": DDPStrategy, "fsdp2": FSDP2Strategy,
        "lightning-ddp": lambda: "ddp",
        "lightning-fsdp2": lambda: ModelParallelStrategy(data_parallel_size=2,
                                                         tensor_parallel_size=1),
    }[args.strategy]()  # fmt: skip
    optimizer = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
        "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    }[args.optimizer]
    if args.distill:
        from lifecycle.stages import DistillationModule

        teacher = ClassificationModule(MLP(in_features=64, hidden=[96]), num_classes=10)
        teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
        model = DistillationModule(
            teacher, MLP(in_features=64, hidden=args.hidden), num_classes=10, temperature=2.0,
            alpha=0.7, feature_layers={"": "backbone"}, optimizer=optimizer,
        )  # fmt: skip
    else:
        model = ClassificationModule(
            MLP(in_features=64, hidden=args.hidden, batch_norm=args.batch_norm),
            num_classes=10, optimizer=optimizer,
        )  # fmt: skip
    if args.freeze_first:
        for p in model.backbone.layers[1].parameters():
            p.requires_grad = False
    frozen_before = model.backbone.layers[1].weight.detach().clone()
    dm = ImageClassificationDataModule(
        "digits", batch_size=args.batch * (2 if ranks == 1 else 1), num_workers=0, seed=0
    )
    record, health = Record(), GradientHealth(log_every_n_steps=1)
    callbacks = [record, health] + ([NaNAt(args.nan_at)] if args.nan_at is not None else [])
    if args.batch_norm:
        model.register_buffer("rank_state", torch.zeros(3))
        callbacks.append(RankState())
    if args.finetune:
        from lifecycle.training.finetuning import DiscriminativeLR, FreezeUnfreeze

        callbacks.append(
            FreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_scale=0.5)
            if args.finetune == "freeze_unfreeze"
            else DiscriminativeLR(lr_decay=0.5)
        )
    trainer = L.Trainer(
        accelerator="cpu", devices=ranks, strategy=strategy, max_steps=args.steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        gradient_clip_val=args.clip, gradient_clip_algorithm=args.clip_algorithm,
        accumulate_grad_batches=args.accumulate, callbacks=callbacks,
        limit_train_batches=args.epoch_steps,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    rank[0] = trainer.global_rank
    params = list(model.parameters())
    state = [
        t
        for s in trainer.optimizers[0].state.values()
        for t in s.values()
        if torch.is_tensor(t) and t.ndim > 0
    ]
    full = [getattr(p, "full_tensor", lambda p=p: p)().detach() for p in params]
    frozen = model.backbone.layers[1].weight
    frozen = getattr(frozen, "full_tensor", lambda: frozen)().detach()
    result = {
        "rank": trainer.global_rank,
        "losses": record.losses,
        "param_bytes": local_bytes(params),
        "optimizer_bytes": local_bytes(state),
        "checksum": float(sum(t.double().sum() for t in full)),
        "frozen_unchanged": bool(torch.equal(frozen, frozen_before)),
        "param_groups": len(trainer.optimizers[0].param_groups),
        "sharded": any(hasattr(p, "_local_tensor") for p in params),
        "events": health.events,
    }
    if args.batch_norm:
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        result["norm_statistics"] = [
            [m.running_mean.tolist(), m.running_var.tolist(), int(m.num_batches_tracked)]
            for m in norms
        ]
        result["rank_state"] = model.rank_state.tolist()
    if args.distill:
        teacher_state = model.teacher.state_dict()
        result["teacher_unchanged"] = all(
            torch.equal(teacher_state[k], v) for k, v in teacher_before.items()
        )
        result["teacher_sharded"] = any(
            hasattr(p, "_local_tensor") for p in model.teacher.parameters()
        )
        result["adapter_sharded"] = any(
            hasattr(p, "_local_tensor") for p in model.adapters.parameters()
        )
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
