"""A fit, validate, test and predict run as a script, for the distributed evaluation tests.

``python tests/evaluation/eval_fit.py --strategy single|ddp|fsdp2 --data FILE.npz --out DIR``:
an MLP on the ``.npz`` images (8 x 8, 3 classes), trained with a learning rate of 0 so every
strategy evaluates the very same weights. Evaluation batches are ``--batch`` per rank, so with
513 validation and test records and 2 ranks the ranks' shards are uneven (257 and 256). Rank 0
writes ``DIR/result.json`` (the logged validation loss of fit and validate, the validate
metrics) beside what the run's callbacks wrote: ``metrics.json`` and ``predictions.csv``.

Several runs in one launch (one start-up of both ranks): their arguments separated by
``--then`` (``--strategy ddp --out A ... --then --strategy fsdp2 --out B ...``), run one after
the other in the same processes, each with Trainers of its own and its own ``--out``; the
first Trainer launches rank 1, which runs the same runs, and the process group is set up once.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import lightning as L
import torch

from lifecycle.data import ImageClassificationDataModule
from lifecycle.evaluation import EvaluationReport, PredictionWriter
from lifecycle.models import MLP
from lifecycle.stages import ClassificationModule
from lifecycle.training.strategies import DDPStrategy, FSDP2Strategy
from tests.training.distributed_fit import split_runs


def main(argv: list[str] | None = None) -> None:
    """Run the runs of ``argv`` (one, or several separated by ``--then``) in this process."""
    for chunk in split_runs(sys.argv[1:] if argv is None else list(argv)):
        run(chunk)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=["single", "ddp", "fsdp2"], required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=256, help="per rank")
    args = parser.parse_args(argv)

    L.seed_everything(0, verbose=False)
    ranks = 1 if args.strategy == "single" else 2
    strategy = {"single": "auto", "ddp": DDPStrategy(), "fsdp2": FSDP2Strategy()}[args.strategy]
    model = ClassificationModule(
        MLP(in_features=64, hidden=[16]),
        num_classes=3,
        optimizer=partial(torch.optim.SGD, lr=0.0),
    )
    dm = ImageClassificationDataModule(
        args.data, val_fraction=0.5, batch_size=args.batch, num_workers=0, seed=0
    )
    out = Path(args.out)
    trainer = L.Trainer(
        accelerator="cpu", devices=ranks, strategy=strategy, max_epochs=1,
        limit_train_batches=1, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=out, callbacks=[EvaluationReport(), PredictionWriter()],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    fit_val_loss = float(trainer.callback_metrics["val/loss"])
    validated = trainer.validate(model, datamodule=dm, verbose=False)[0]
    trainer.test(model, datamodule=dm, verbose=False)
    trainer.predict(model, datamodule=dm, return_predictions=False)
    if trainer.is_global_zero:
        result = {
            "fit_val_loss": fit_val_loss,
            "validate": {k: float(v) for k, v in validated.items()},
            "val_records": len(dm.splits["val"]),
        }
        (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
