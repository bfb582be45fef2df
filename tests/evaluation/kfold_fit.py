"""K-fold out-of-fold probabilities as a script, for the distributed cleaning test.

``python tests/evaluation/kfold_fit.py --out DIR``: 2-fold training of an MLP on 89 digits
images (an odd count, so the held-out shards of 2 ranks are uneven) under the toolkit's
``DDPStrategy`` on 2 CPU processes; every rank writes the probabilities it got to
``DIR/rank<N>.npy``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch.distributed as dist

from lifecycle.data import ImageClassificationDataModule
from lifecycle.data.cleaning.kfold import out_of_fold_probabilities
from lifecycle.models import MLP
from lifecycle.stages import ClassificationModule
from lifecycle.training.strategies import DDPStrategy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dm = ImageClassificationDataModule("digits", batch_size=16, num_workers=0)
    records = dm.cleaning_records()
    nine_a_class = np.concatenate([np.flatnonzero(records.labels == c)[:9] for c in range(10)])
    records = records.take(nine_a_class[:-1])
    model = ClassificationModule(MLP(in_features=64, hidden=[16]), num_classes=10)
    trainer = {"max_epochs": 1, "accelerator": "cpu", "devices": 2, "strategy": DDPStrategy(),
               "enable_progress_bar": False}  # fmt: skip
    probs = out_of_fold_probabilities(model, dm, records, folds=2, trainer_kwargs=trainer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"rank{dist.get_rank()}.npy", probs)


if __name__ == "__main__":
    main()
