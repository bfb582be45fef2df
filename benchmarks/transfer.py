"""Transfer-learning benchmark: what a pretrained model and each fine-tuning strategy buy on
scarce labels, against training from scratch and the classical baseline.

Text, a ULMFiT-style table. Tweet sentiment (3 classes), 2,000 training labels (the
DataModule's seeded stratified subset), all rows tested on the same 7,434 test tweets:

- ``tfidf``: TF-IDF word 1-2 grams + logistic regression on the 2,000 texts (C picked on the
  validation split): what a practitioner would try first.
- ``scratch``: the tweets recipe's tiny Transformer (2 layers, 128 wide, a BPE vocabulary
  trained on the 2,000 texts) from random weights, ``--scratch-epochs`` epochs.
- ``minilm_linear_probe``: all-MiniLM-L6-v2 (``PretrainedTransformer``, mean pooling) frozen,
  a linear head trained by the ``LinearProbe`` callback.
- ``minilm_full``: every weight trained (no callback).
- ``minilm_gradual``: ``GradualUnfreezing`` (head alone in epoch 0, then one layer group more
  per epoch, each group below at 0.38x the rate above, as ULMFiT).
- ``minilm_discriminative``: ``DiscriminativeLR`` (everything trains, layer group k from the top
  at ``--lr-decay ** (k + 1)`` x the head's rate).

The MiniLM rows share one recipe: AdamW (weight decay 0.01), warm-up cosine schedule, batch 32,
``--max-length`` tokens, label smoothing 0.1, no validation during training (the final weights
are tested). Each row reports test accuracy, macro-F1 and seconds (training and testing). Each
row's learning rate and epochs were chosen on the validation split (``--eval-split val``; the
runs are in ``benchmarks/results/transfer_selection.json``): full fine-tuning 2e-4 for 2 epochs,
DiscriminativeLR 4e-4 at the head with decay 0.7, GradualUnfreezing 3e-3 at the head over 4
epochs, the linear probe 1e-2 for 4 epochs, each with the encoder's dropout off (``--minilm-dropout
0``; the selection runs had it off too). Run nothing else meanwhile: two processes each
using both cores slow one another down several-fold on this machine.

Images. Fashion-MNIST with 1,000 training labels (seeded stratified subset), tested on the 10k
test images: EfficientNet-Lite0 from its ImageNet weights vs the same network from random
weights, the recipe ``recipes/fashion_mnist/transfer_efficientnet.yaml``'s settings.

Targets: the best transfer row >= scratch + 0.05 and > tfidf; each row within 15 minutes on 2
cores.

    python benchmarks/transfer.py [--only text|image] [--epochs 2]

Writes ``benchmarks/results/transfer.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightning as L  # noqa: E402
from common import RESULTS, write_result  # noqa: E402
from text_baselines import tfidf_side  # noqa: E402

from lifecycle.data import ImageClassificationDataModule, TextClassificationDataModule  # noqa: E402
from lifecycle.models import TransformerEncoder  # noqa: E402
from lifecycle.models.text import PretrainedTransformer  # noqa: E402
from lifecycle.stages import ClassificationModule  # noqa: E402
from lifecycle.training.finetuning import (  # noqa: E402
    DiscriminativeLR,
    GradualUnfreezing,
    LinearProbe,
)
from lifecycle.training.optim import WarmupCosineLR  # noqa: E402

log = logging.getLogger("transfer")


SMOKE: dict = {}  # --smoke: a few batches per epoch, to check the script end to end
SPLIT = "test"  # --eval-split val: score on the validation split, to choose settings


def trainer(epochs: int, callbacks=()) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, gradient_clip_val=1.0, callbacks=list(callbacks), **SMOKE,
    )  # fmt: skip


def classifier(backbone, num_classes: int, lr: float, warmup: float = 0.1, **kw):
    return ClassificationModule(
        backbone, num_classes=num_classes, label_smoothing=0.1,
        optimizer=lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=0.01),
        scheduler=lambda o, total_steps=None: WarmupCosineLR(o, total_steps, warmup_steps=warmup),
        **kw,
    )  # fmt: skip


def run_row(name: str, model, data, epochs: int, callbacks=(), **extra) -> dict:
    L.seed_everything(0, verbose=False)
    start = time.perf_counter()
    fit = trainer(epochs, callbacks)
    fit.fit(model, datamodule=data)
    train_seconds = time.perf_counter() - start
    # counted before testing: a fine-tuning callback's setup freezes the backbone again for test
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if SPLIT == "val":  # choosing settings: the validation split, never the test set
        scores = L.Trainer(
            accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
            enable_model_summary=False,
        ).validate(model, datamodule=data, verbose=False)[0]  # fmt: skip
    else:
        scores = fit.test(model, datamodule=data, verbose=False)[0]
    row = {
        "name": name,
        "accuracy": round(float(scores[f"{SPLIT}/accuracy"]), 4),
        "macro_f1": round(float(scores[f"{SPLIT}/f1"]), 4),
        "seconds": round(time.perf_counter() - start, 1),
        "train_seconds": round(train_seconds, 1),
        "epochs": epochs,
        "trainable_params": trainable,
        **extra,
    }
    log.warning(json.dumps(row))
    return row


def text_rows(args) -> dict:
    def tweets(tokenizer: str, **kw):
        data = TextClassificationDataModule(
            "tweets-sentiment", tokenizer=tokenizer, max_length=args.max_length,
            train_subset=2000, batch_size=32, eval_batch_size=128, seed=42, **kw,
        )  # fmt: skip
        data.setup("fit")
        return data

    rows = []

    def wanted(name: str) -> bool:
        return not args.rows or name in args.rows

    if wanted("tfidf") or wanted("scratch"):
        scratch_data = tweets("bpe", vocab_size=8000)
    if wanted("tfidf"):
        side, selection = tfidf_side(scratch_data, (0.3, 1.0, 3.0, 10.0))
        seconds = side.pop("train_seconds")["median"]
        tfidf = {**side, "accuracy": side["accuracy"]["median"],
                 "macro_f1": side["macro_f1"]["median"], "seconds": seconds,
                 "selection_runs": selection}  # fmt: skip
        rows.append(tfidf)
        log.warning(json.dumps(tfidf))
    if wanted("scratch"):
        L.seed_everything(0, verbose=False)
        scratch = TransformerEncoder(
            vocab_size=8000, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512,
            max_length=args.max_length, dropout=0.2, pooling="mean",
        )  # fmt: skip
        rows.append(
            run_row("scratch", classifier(scratch, 3, 1e-3, head_dropout=0.1), scratch_data,
                    args.scratch_epochs, what="tiny Transformer 2x128 from random weights")
        )  # fmt: skip
    data = tweets("all-MiniLM-L6-v2")
    strategies = {
        "minilm_linear_probe": (LinearProbe(), args.probe_lr, args.probe_epochs),
        "minilm_full": (None, args.lr, args.epochs),
        "minilm_gradual": (
            GradualUnfreezing(start_epoch=1, lr_decay=0.38),
            args.gradual_lr,
            args.gradual_epochs,
        ),
        "minilm_discriminative": (
            DiscriminativeLR(lr_decay=args.lr_decay),
            args.discriminative_lr,
            args.epochs,
        ),
    }
    for name, (callback, lr, epochs) in strategies.items():
        if not wanted(name):
            continue
        L.seed_everything(0, verbose=False)
        # dropout off in the encoder: the settings were chosen so (see the module docstring)
        backbone = PretrainedTransformer("all-MiniLM-L6-v2", dropout=args.minilm_dropout)
        model = classifier(backbone, 3, lr, head_dropout=0.1)
        rows.append(
            run_row(name, model, data, epochs, [callback] if callback else [],
                    what=f"all-MiniLM-L6-v2, {type(callback).__name__ if callback else 'full fine-tuning'}, lr {lr}")
        )  # fmt: skip
    transfer = [r for r in rows if r["name"].startswith("minilm")]
    best = max(transfer, key=lambda r: r["accuracy"]) if transfer else None
    by_name = {r["name"]: r for r in rows}
    result = {"rows": rows, "text_train_labels": 2000, "text_eval_split": SPLIT}
    result["text_eval_size"] = len(data.texts[SPLIT])
    if best:
        result["best_transfer"] = best["name"]
        for baseline in ("scratch", "tfidf"):
            if baseline in by_name:
                gain = best["accuracy"] - by_name[baseline]["accuracy"]
                result[f"best_minus_{baseline}"] = round(gain, 4)
    return {
        **result,
        "text_settings": {
            "max_length": args.max_length,
            "lr": args.lr,
            "epochs": args.epochs,
            "probe_lr": args.probe_lr,
            "probe_epochs": args.probe_epochs,
            "lr_decay": args.lr_decay,
            "scratch_epochs": args.scratch_epochs,
            "gradual_epochs": args.gradual_epochs,
            "gradual_lr": args.gradual_lr,
            "discriminative_lr": args.discriminative_lr,
            "minilm_dropout": args.minilm_dropout,
        },  # fmt: skip
    }


def image_rows(args) -> dict:
    from lifecycle.models import EfficientNetLite0

    result = {}
    for name, pretrained in (("transfer", True), ("scratch", False)):
        data = ImageClassificationDataModule(
            "fashion-mnist", train_subset=1000, train_transforms="light", batch_size=32,
            eval_batch_size=256, seed=42,
        )  # fmt: skip
        L.seed_everything(0, verbose=False)
        backbone = EfficientNetLite0(pretrained=pretrained, in_channels=1, image_size=64)
        row = run_row(f"effnet_{name}", classifier(backbone, 10, 1e-3), data, args.image_epochs)
        result[f"effnet_{name}_acc"] = row["accuracy"]
        result[f"effnet_{name}_seconds"] = row["seconds"]
    result["image_train_labels"] = 1000
    result["image_epochs"] = args.image_epochs
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["text", "image"], default=None)
    parser.add_argument("--rows", nargs="*", default=None, help="MiniLM rows to run")
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--gradual-epochs", type=int, default=4,
        help="epoch 0 trains the head alone and epoch k the top k groups: about the compute of "
        "2 full epochs",
    )  # fmt: skip
    parser.add_argument(
        "--gradual-lr", type=float, default=3e-3,
        help="the head's; the top group gets 0.38x, the next 0.14x, ...",
    )  # fmt: skip
    parser.add_argument("--discriminative-lr", type=float, default=4e-4, help="the head's")
    parser.add_argument("--minilm-dropout", type=float, default=0.0, help="the encoder's")
    parser.add_argument("--probe-lr", type=float, default=1e-2)
    parser.add_argument("--probe-epochs", type=int, default=4)
    parser.add_argument("--lr-decay", type=float, default=0.7)
    parser.add_argument("--scratch-epochs", type=int, default=10)
    parser.add_argument("--image-epochs", type=int, default=10)
    parser.add_argument("--out", default="transfer")
    parser.add_argument("--eval-split", choices=["test", "val"], default="test")
    parser.add_argument("--smoke", action="store_true", help="3 batches per epoch and test")
    args = parser.parse_args()
    if args.smoke:
        SMOKE.update(limit_train_batches=3, limit_test_batches=3)
    global SPLIT
    SPLIT = args.eval_split
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    result: dict = {}
    if args.only in (None, "text"):
        result.update(text_rows(args))
    if args.only in (None, "image"):
        result.update(image_rows(args))
    result["total_minutes"] = round((time.perf_counter() - start) / 60, 1)
    earlier = RESULTS / f"{args.out}.json"
    if args.only and earlier.is_file():  # one part re-run: keep the other part's figures
        kept = json.loads(earlier.read_text())
        kept.pop("machine", None)
        result = {**kept, **result, f"{args.only}_minutes": result.pop("total_minutes")}
        result["total_minutes"] = None  # the parts ran separately: see {text,image}_minutes
    write_result(args.out, result)


if __name__ == "__main__":
    main()
