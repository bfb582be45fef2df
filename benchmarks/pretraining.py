"""Pretraining benchmark: what self-supervised pretraining buys when labels are scarce.

Images (Fashion-MNIST):
1. SimCLR (``ContrastivePretrainingModule``) on the training images less a 2% validation
   split (58,800), labels unused: the recipe's SmallCNN (32-32-64-64 convs, a 256-unit dense
   layer), the ``simclr`` views, temperature 0.2, batch 256, AdamW 2e-3 with a warm-up cosine
   schedule over ``--simclr-epochs`` (14), bf16 autocast, channels-last, one loader worker; the
   backbone written in the pretrained-backbone format.
2. Linear probe: logistic regression (C 0.1, standardized features) on the frozen backbone's
   features of the 600 labelled images (1%: 60 per class, a fixed seed's stratified subset),
   tested on the 10k test images; also with 60 labels (0.1%).
3. Fine-tuning from the pretrained backbone (``load_backbone``) and, beside it, the same network
   from scratch, with the same recipe (``medium`` augmentation, label smoothing 0.1, AdamW,
   weight decay 0.05, warm-up cosine, 600 steps of 64 images), on the same 600 labels; and on
   60. Test accuracy of the final weights (no checkpoint selection).

Text: masked-LM pretraining (``MaskedLMPretrainingModule``, a 2-layer 128-wide BERT, BPE
vocabulary of 8,000, rows of 64 tokens) on the fortunes and the texts of the tweets' training and
validation splits (the test tweets left out; labels unused) for ``--mlm-epochs`` within
``--mlm-minutes``; held-out perplexity of the masked tokens before and after. Then fine-tuning
on 2,000 labelled tweets from it and from the same architecture with random weights (the same
tokenizer, recipe and seed), tested on the 7,441 test tweets.

The protocol (benchmarks/README.md): each side of each comparison gets the same three validation
runs, the learning rate at 0.5x, 1x and 2x the recipe's (1e-3 images, 5e-4 tweets), chosen on
validation at seed 0; each side's chosen rate is then tested at seeds 0, 1 and 2 (the side that
trains first alternating by seed); every gain is the median over the seeds with min, max and the
seeds that favour pretraining. ``--only image|text`` re-runs one part and keeps the other's
figures from the committed JSON (recorded under ``image_rerun`` / ``text_rerun``).

Targets: ``finetune_1pct_acc >= scratch_1pct_acc + 0.08``; the whole run within 45 minutes on 2
cores.

Where it stands (the committed run, medians over 3 seeds; see the README): 1% 0.8587 vs 0.8458,
+1.29 points (3 of 3 seeds); 0.1% 0.7446 vs 0.6933, +4.94 (3 of 3); linear probes 0.8125 and
0.7169; masked LM 8,378 -> 425 perplexity in 2 epochs, tweets 0.6577 vs 0.6672 from scratch (-0.95,
0 of 3: no help). The scratch network trained with this fine-tuning recipe is already strong at 600 labels
(0.846, against 0.781 for the naive baseline in the issue), so +8 points means about 0.926,
about what this network reaches with all 60,000 labels. Tried earlier, one seed each: SimCLR
for 6 epochs (probe 0.808, +1.1 at 1%); the backbone at a tenth of the head's learning rate:
0.839 (worse than full fine-tuning, chosen against on validation accuracy too).

    python benchmarks/pretraining.py [--only image|text] [--simclr-epochs 14] [--mlm-epochs 6]

Writes ``benchmarks/results/pretraining.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightning as L  # noqa: E402
from common import RESULTS, gain, quiet_evaluator, select_and_test, spread, write_result  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from lifecycle.artifacts import load_backbone  # noqa: E402
from lifecycle.data import ImageClassificationDataModule  # noqa: E402
from lifecycle.models import SmallCNN, SmallResNet  # noqa: E402
from lifecycle.stages import ClassificationModule  # noqa: E402
from lifecycle.stages.contrastive import ContrastivePretrainingModule  # noqa: E402
from lifecycle.training.optim import WarmupCosineLR  # noqa: E402

log = logging.getLogger("pretraining")


def encoder(kind: str):
    if kind == "resnet":
        return SmallResNet(in_channels=1, widths=(32, 64, 128), blocks_per_stage=1)
    if kind == "cnn":
        return SmallCNN(in_channels=1, channels=(32, 64), convs_per_block=2, pool_size=4,
                        hidden=256, dropout=0.0)  # fmt: skip
    if kind == "cnn3":
        return SmallCNN(in_channels=1, channels=(32, 64, 128), convs_per_block=1, pool_size=2,
                        hidden=256, dropout=0.0)  # fmt: skip
    raise ValueError(kind)


class TimeBudget(Callback):
    """Stops training once ``seconds`` have passed (checked after each batch)."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, None

    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, *args):
        if time.perf_counter() - self.start > self.seconds:
            trainer.should_stop = True


def pretrain_simclr(args, out: Path) -> dict:
    data = ImageClassificationDataModule(
        "fashion-mnist", val_fraction=0.02, batch_size=args.batch, eval_batch_size=512,
        train_transforms=args.views_preset, views=2, num_workers=args.workers, seed=0,
        train_subset=args.pretrain_subset,
    )  # fmt: skip
    epochs = args.simclr_epochs  # the schedule's length; --simclr-minutes may stop it sooner
    model = ContrastivePretrainingModule(
        encoder(args.encoder),
        projection_dim=128,
        projection_hidden=args.proj_hidden,
        temperature=args.temperature,
        optimizer=lambda p: torch.optim.AdamW(p, lr=args.lr, weight_decay=1e-4),
        scheduler=lambda o, total_steps=None: WarmupCosineLR(o, total_steps, warmup_steps=0.05),
        channels_last=True,
        save_to=str(out / "simclr"),
    )
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, precision=args.precision,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[TimeBudget(args.simclr_minutes * 60)], log_every_n_steps=20,
        limit_val_batches=4,
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - t0
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    log.warning(f"simclr: {seconds:.0f}s, epoch {trainer.current_epoch}, {metrics}")
    return {"simclr_seconds": round(seconds, 1), "simclr_epochs": trainer.current_epoch,
            "simclr_steps": trainer.global_step, "simclr_metrics": metrics}  # fmt: skip


def features(backbone, images: torch.Tensor) -> np.ndarray:
    backbone.eval()
    with torch.no_grad():
        return torch.cat(
            [backbone(images[i : i + 1024]) for i in range(0, len(images), 1024)]
        ).numpy()


def linear_probe(folder: Path, labels: int, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    backbone = load_backbone(str(folder))
    info = backbone.pretrained
    data = ImageClassificationDataModule(
        "fashion-mnist", train_subset=labels, seed=seed, mean=info.mean, std=info.std
    )
    data.setup("fit")
    train, test = data.split_dataset("train"), data.split_dataset("test")
    xtr, xte = features(backbone, train.tensor), features(backbone, test.tensor)
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(xtr), train.labels.numpy())
    return float((clf.predict(scaler.transform(xte)) == test.labels.numpy()).mean())


def finetune(args, folder: Path | None, labels: int, seed: int, lr: float) -> dict:
    """Train on ``labels`` labelled images (the seed's stratified subset) from the pretrained
    backbone (or from scratch when ``folder`` is None) with the fine-tuning recipe at learning
    rate ``lr``. Returns the validation accuracy of the final weights and ``test``, a function
    that reads the test set once (called only for each side's chosen setting)."""
    L.seed_everything(seed, workers=True)
    backbone = load_backbone(str(folder)) if folder is not None else encoder(args.encoder)
    data = ImageClassificationDataModule(
        "fashion-mnist", train_subset=labels, seed=seed, batch_size=min(64, labels),
        eval_batch_size=1024, train_transforms=args.ft_transforms,
    )  # fmt: skip
    epochs = max(1, round(args.ft_steps / max(1, labels // min(64, labels))))
    model = ClassificationModule(
        backbone, num_classes=10, label_smoothing=0.1, channels_last=True,
        optimizer=lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=args.ft_wd),
        scheduler=lambda o, total_steps=None: WarmupCosineLR(o, total_steps, warmup_steps=0.1),
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, precision=args.precision, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
        enable_model_summary=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - t0
    evaluator = quiet_evaluator()
    val = evaluator.validate(model, datamodule=data, verbose=False)[0]["val/accuracy"]

    def test() -> float:
        return round(
            float(evaluator.test(model, datamodule=data, verbose=False)[0]["test/accuracy"]), 4
        )

    return {"val": round(float(val), 4), "train_seconds": round(seconds, 1), "test": test}


def compare(run, sides: dict, lrs: list[float], seeds: list[int], selection: list) -> dict:
    """One comparison under the protocol (``common.select_and_test``): each side's learning
    rate chosen among ``lrs`` on validation at the first seed. ``run(side, seed, lr)`` trains one
    model. Returns per-side test accuracies (spreads), the chosen rates and the per-seed gains
    of the first side over the second."""
    first, second = list(sides)
    out = select_and_test(
        lambda side, seed, setting: run(side, seed, setting["lr"]), sides,
        {side: [{"lr": lr} for lr in lrs] for side in sides}, seeds, selection,
    )  # fmt: skip
    tests = out["tests"]
    return {
        "acc": {side: spread(tests[side]) for side in sides},
        "chosen_lr": {side: setting["lr"] for side, setting in out["chosen"].items()},
        "gain": gain(tests[first], tests[second]),
    }


def pretrain_text(args, out: Path) -> dict:
    """Masked LM on the fortunes and the tweets' texts (the classification test tweets left
    out), then fine-tuning on 2k labelled tweets from it and from scratch."""
    from lifecycle.data import CorpusDataModule, TextClassificationDataModule
    from lifecycle.models import TransformerEncoder
    from lifecycle.stages import MaskedLMPretrainingModule

    L.seed_everything(0)
    tweets = TextClassificationDataModule("tweets-sentiment", seed=0, max_length=64)
    tweets.setup("fit")
    unlabeled = out / "tweets_unlabeled.txt"
    unlabeled.parent.mkdir(parents=True, exist_ok=True)
    texts = tweets.texts["train"].texts + tweets.texts["val"].texts  # no test tweet
    unlabeled.write_text("\n".join(" ".join(t.split()) for t in texts) + "\n")
    corpus = CorpusDataModule(
        ["fortunes", str(unlabeled)], vocab_size=8000, max_length=64, batch_size=64,
        eval_batch_size=256, seed=0,
    )  # fmt: skip
    sizes = dict(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512, max_length=64)
    model = MaskedLMPretrainingModule(
        **sizes, dropout=0.1, pooling="mean", save_to=str(out / "mlm"),
        optimizer=lambda p: torch.optim.AdamW(p, lr=args.mlm_lr, weight_decay=0.01),
        scheduler=lambda o, total_steps=None: WarmupCosineLR(o, total_steps, warmup_steps=0.05),
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=args.mlm_epochs, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, gradient_clip_val=1.0,
        callbacks=[TimeBudget(args.mlm_minutes * 60)],
    )  # fmt: skip
    start = trainer.validate(model, datamodule=corpus, verbose=False)[0]["val/perplexity"]
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=corpus)
    seconds = time.perf_counter() - t0
    end = trainer.validate(model, datamodule=corpus, verbose=False)[0]["val/perplexity"]
    result = {
        "mlm_ppl_start": round(float(start), 1), "mlm_ppl_end": round(float(end), 2),
        "mlm_seconds": round(seconds, 1), "mlm_epochs": trainer.current_epoch,
        "mlm_documents": {k: len(v) for k, v in corpus.texts.items()},
    }  # fmt: skip
    log.warning(f"mlm: {result}")
    folder = out / "mlm"

    def run(side: str, seed: int, lr: float) -> dict:
        L.seed_everything(seed)
        data = TextClassificationDataModule(
            "tweets-sentiment", tokenizer=str(folder), max_length=64, train_subset=2000,
            batch_size=32, eval_batch_size=256, seed=0,  # seed 0's split: the MLM's corpus
        )  # fmt: skip
        backbone = (
            load_backbone(str(folder)) if side == "finetune"
            else TransformerEncoder(load_backbone(str(folder)).vocab_size, **sizes, pooling="mean")
        )  # fmt: skip
        classifier = ClassificationModule(
            backbone, num_classes=3, head_dropout=0.1, label_smoothing=0.1,
            optimizer=lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=0.01),
            scheduler=lambda o, total_steps=None: WarmupCosineLR(o, total_steps, warmup_steps=0.1),
        )  # fmt: skip
        fit = L.Trainer(
            max_epochs=args.text_ft_epochs, accelerator="cpu", devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
            gradient_clip_val=1.0, enable_model_summary=False,
        )  # fmt: skip
        t0 = time.perf_counter()
        fit.fit(classifier, datamodule=data)
        seconds = time.perf_counter() - t0
        evaluator = quiet_evaluator()
        val = evaluator.validate(classifier, datamodule=data, verbose=False)[0]["val/accuracy"]
        result["text_test_size"] = len(data.texts["test"])

        def test() -> float:
            scores = evaluator.test(classifier, datamodule=data, verbose=False)[0]
            return round(float(scores["test/accuracy"]), 4)

        return {"val": round(float(val), 4), "train_seconds": round(seconds, 1), "test": test}

    lrs = [args.text_ft_lr * m for m in args.lr_multipliers]
    selection: list = []
    text = compare(run, {"finetune": "text_finetune", "scratch": "text_scratch"}, lrs,
                   args.seeds, selection)  # fmt: skip
    result.update(
        text_finetune_acc=text["acc"]["finetune"], text_scratch_acc=text["acc"]["scratch"],
        text_gain=text["gain"], text_chosen_lr=text["chosen_lr"], text_selection_runs=selection,
    )  # fmt: skip
    log.warning(f"text: {text}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["image", "text"], default=None)
    parser.add_argument("--encoder", default="cnn")
    parser.add_argument("--simclr-minutes", type=float, default=30)
    parser.add_argument("--simclr-epochs", type=int, default=14)
    parser.add_argument("--pretrain-subset", type=int, default=None)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--proj-hidden", type=int, default=None)
    parser.add_argument("--views-preset", default="simclr")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--ft-transforms", default="medium")
    parser.add_argument("--ft-steps", type=int, default=600)
    parser.add_argument("--ft-lr", type=float, default=1e-3)
    parser.add_argument("--ft-wd", type=float, default=0.05)
    parser.add_argument("--lr-multipliers", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--mlm-minutes", type=float, default=8)
    parser.add_argument("--mlm-epochs", type=int, default=6)
    parser.add_argument("--mlm-lr", type=float, default=1e-3)
    parser.add_argument("--text-ft-epochs", type=int, default=6)
    parser.add_argument("--text-ft-lr", type=float, default=5e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/bench-pretraining")
    parser.add_argument("--skip-pretrain", action="store_true")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    result: dict = {"settings": vars(args)}
    t0 = time.perf_counter()
    if args.only in (None, "image"):
        if not args.skip_pretrain:
            result.update(pretrain_simclr(args, out))
        folder = out / "simclr"
        for labels, key in ((600, ""), (60, "_01pct")):
            probes = [linear_probe(folder, labels, seed) for seed in args.seeds]
            result[f"linear_probe{key}_acc"] = spread(probes)
        print(json.dumps(result), flush=True)
        lrs = [args.ft_lr * m for m in args.lr_multipliers]
        selection: list = []
        for labels, key in ((600, "1pct"), (60, "01pct")):
            side = compare(
                lambda s, seed, lr, labels=labels: finetune(
                    args, folder if s == "finetune" else None, labels, seed, lr
                ),
                {"finetune": f"finetune_{key}", "scratch": f"scratch_{key}"},
                lrs, args.seeds, selection,
            )  # fmt: skip
            result[f"finetune_{key}_acc"] = side["acc"]["finetune"]
            result[f"scratch_{key}_acc"] = side["acc"]["scratch"]
            result[f"gain_{key}"] = side["gain"]
            result[f"chosen_lr_{key}"] = side["chosen_lr"]
            print(json.dumps(result), flush=True)
        result["image_selection_runs"] = selection
    if args.only in (None, "text"):
        result.update(pretrain_text(args, out))
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result["protocol"] = {
        "seeds": args.seeds,
        "seed_draws": "images: seed_everything (initialization, batch order, augmentation) and "
        "the labelled subset and validation split (the DataModule's seeded stratified draw, the "
        "same for both sides of a seed); tweets: seed_everything only, on seed 0's split, whose "
        "train and validation texts are the masked LM's corpus (another seed's test split would "
        "hold texts the MLM read); SimCLR and the masked LM are pretrained once, with seed 0",
        "selection": "val: per side, the learning rate with the better validation accuracy of "
        "the final weights at the first seed (6,000 held-out training images; 2,976 tweets)",
        "selection_runs_per_side": len(args.lr_multipliers),
        "selection_space": f"learning rate x {args.lr_multipliers} of the recipe's "
        f"({args.ft_lr:g} images, {args.text_ft_lr:g} tweets)",
        "budget": f"equal steps: {args.ft_steps} steps of 64 images (60 labels: one batch of 60) "
        f"for both image sides, {args.text_ft_epochs} epochs of 2,000 tweets for both text sides",
        "test_reads": "once per side per seed, at the chosen rate",
        "timing": "the side that trains first alternates by seed",
    }
    earlier = RESULTS / "pretraining.json"
    if args.only and not args.tag and earlier.is_file():  # one part re-run: keep the other's
        kept = json.loads(earlier.read_text())
        kept.pop("machine", None)
        part = {k: v for k, v in result.items() if k not in ("settings", "total_seconds")}
        rerun = {"seconds": result["total_seconds"], "settings": result["settings"],
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
        result = {**kept, **part, f"{args.only}_rerun": rerun}
    if args.tag:
        Path(f"/tmp/pretrain_{args.tag}.json").write_text(json.dumps(result, indent=2))
    else:
        write_result("pretraining", result)


if __name__ == "__main__":
    main()
