"""Distillation benchmark: what a teacher's soft targets buy a small student, against the same
student trained on labels alone (same epochs, seed and recipe: ``alpha = 0`` is the scratch row).

**Fashion-MNIST, full labels** (54,000 training images, 6,000 for validation, tested on the 10,000
test images). The teacher is ``recipes/fashion_mnist/classify.yaml``'s CNN (330k parameters)
trained here with that recipe but without label smoothing (``--teacher-label-smoothing``:
Muller et al. 2019 found label-smoothed teachers distil worse; here the two taught about
equally, see the README). The student is ``--student`` (default
``recipes/fashion_mnist/distill.yaml``'s CNN, 13x fewer parameters), 30 epochs either way. Keys: ``teacher_acc``, ``scratch_student_acc``,
``distilled_student_acc``, ``gap_recovered`` = (distilled - scratch) / (teacher - scratch), the
parameter counts and the CPU inference time per image of each (batches of 1 and of 1,024, the
median of alternated repeats).

**Fashion-MNIST, scarce labels**: 5,000 labelled images (seeded, class-balanced) and the other
49,000 training images without their labels. The student trained on the 5,000 labels alone
(``scarce_scratch_acc``) against the same student distilled from the full-label teacher on the
5,000 labels plus the teacher's scores of all 54,000 images (``scarce_distilled_acc``): the
case of a large model trained elsewhere (it saw the labels of the images that are unlabelled
here) and a small labelled set at hand. Strictly, with a teacher trained on the same 5,000
labels only (``scarce_strict_*``), the unlabelled images carry no label information but what
that teacher learned from 5,000 labels.

**Tweets**: the teacher is MiniLM fine-tuned on 2,000 labelled tweets exactly as
``recipes/tweets/transfer_minilm.yaml`` (benchmarks/transfer.py's best row); the student is
``recipes/tweets/distill_minilm.yaml``'s 2-layer Transformer with its own BPE tokenizer, trained on
the same 2,000 labels plus the teacher's scores of the other 24,700 training tweets. Keys
``text_teacher_acc``, ``text_student_acc``, ``text_scratch_student_acc`` (the student on the 2,000
labels alone), ``text_param_ratio``, ``text_speedup`` (teacher / student inference time on the
test tweets, median of alternated repeats).

**Cached vs live teacher**: the full-label Fashion-MNIST distillation, epochs alternating between
the cached teacher and the live one (after the first epoch filled the cache). Key
``cached_teacher_time_ratio`` = median cached epoch / median live epoch.

Run nothing else meanwhile: two processes each using both cores slow one another several-fold
here.

    python benchmarks/distillation.py [--only full scarce text cache] [--smoke]

Writes ``benchmarks/results/distillation.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightning as L  # noqa: E402
from common import median, write_result  # noqa: E402

from lifecycle.data import ImageClassificationDataModule, TextClassificationDataModule  # noqa: E402
from lifecycle.models import MLP, PretrainedTransformer, SmallCNN, TransformerEncoder  # noqa: E402
from lifecycle.stages import ClassificationModule, DistillationModule  # noqa: E402
from lifecycle.training.finetuning import DiscriminativeLR  # noqa: E402
from lifecycle.training.optim import WarmupCosineLR  # noqa: E402

log = logging.getLogger("distillation")
SMOKE: dict = {}  # --smoke: a few batches per epoch, to check the script end to end
SPLIT = "test"  # --eval-split val: score on the validation split, to choose settings


def trainer(epochs: int, precision: str = "bf16-mixed", **kw) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, precision=precision,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, **{**SMOKE, **kw},
    )  # fmt: skip


def fit(model, data, epochs: int, **kw) -> float:
    """Train from seed 0; the seconds it took."""
    L.seed_everything(0, verbose=False)
    start = time.perf_counter()
    trainer(epochs, **kw).fit(model, datamodule=data)
    return round(time.perf_counter() - start, 1)


def score(model, data) -> float:
    """Accuracy on ``SPLIT`` (the test split; the validation split while choosing settings)."""
    quiet = trainer(1)
    run = quiet.validate if SPLIT == "val" else quiet.test
    return round(float(run(model, datamodule=data, verbose=False)[0][f"{SPLIT}/accuracy"]), 4)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def per_item_us(runs: dict, repeats: int = 7, calls: int = 3) -> dict:
    """CPU inference time per item (microseconds) of each ``{name: (model, inputs)}``, the
    median of ``repeats`` rounds that alternate the models (the machine is shared and noisy)."""
    times: dict = {name: [] for name in runs}
    with torch.inference_mode():
        for model, inputs in runs.values():
            model.eval()(*inputs)  # warm-up
        for _ in range(repeats):
            for name, (model, inputs) in runs.items():
                start = time.perf_counter()
                for _ in range(calls):
                    model(*inputs)
                times[name].append((time.perf_counter() - start) / calls / len(inputs[0]) * 1e6)
    return {name: round(median(t), 2) for name, t in times.items()}


# --------------------------------------------------------------------------- images
def fashion(**kw) -> ImageClassificationDataModule:
    data = ImageClassificationDataModule("fashion-mnist", batch_size=128, eval_batch_size=1024,
                                         seed=42, **kw)  # fmt: skip
    data.setup("fit")
    return data


def teacher_cnn(label_smoothing: float) -> ClassificationModule:
    """``recipes/fashion_mnist/classify.yaml``'s model (330k parameters)."""
    return ClassificationModule(
        SmallCNN(1, (32, 64), 2, 4, 256, 0.3), 10, label_smoothing=label_smoothing,
        channels_last=True, optimizer=partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.05),
        scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=3e-3),
    )  # fmt: skip


def student_net(spec: str):
    """``cnnC_H_P``: ``SmallCNN`` with channels (C, 2C), dense width H, pooled to PxP;
    ``mlpW``: an MLP 784-W."""
    if spec.startswith("mlp"):
        return MLP(784, [int(spec[3:])])
    channels, hidden, pool = (int(v) for v in spec[3:].split("_"))
    return SmallCNN(1, (channels, 2 * channels), 2, pool, hidden, 0.0)


def student_module(args, teacher=None, **kw):
    """The student under the recipe shared by every student row: AdamW, one-cycle. Without a
    teacher, a ``ClassificationModule`` (the labels alone)."""
    common = dict(
        optimizer=partial(torch.optim.AdamW, lr=args.student_lr, weight_decay=0.05),
        scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=args.student_lr),
    )
    if teacher is None:
        return ClassificationModule(student_net(args.student), 10, **common)
    return DistillationModule(
        teacher, student_net(args.student), 10, temperature=args.temperature, alpha=args.alpha,
        **common, **kw,
    )  # fmt: skip


def full_labels(args) -> tuple[dict, ClassificationModule]:
    """Teacher, scratch student and distilled student on all 54,000 training labels."""
    data = fashion()
    teacher = teacher_cnn(args.teacher_label_smoothing)
    teacher_seconds = fit(teacher, data, args.teacher_epochs)
    teacher.eval()
    out = {"teacher_acc": score(teacher, data), "teacher_train_seconds": teacher_seconds}
    log.warning(json.dumps(out))
    scratch = student_module(args)
    out["scratch_student_train_seconds"] = fit(scratch, data, args.student_epochs)
    out["scratch_student_acc"] = score(scratch, data)
    log.warning(json.dumps(out))
    distilled = student_module(args, teacher, cache_teacher=args.mix is None, mix=args.mix)
    transforms = {"train_transforms": args.augment} if args.augment else {}
    student_data = fashion(**transforms) if transforms else data
    out["distilled_student_train_seconds"] = fit(distilled, student_data, args.student_epochs)
    out["distilled_student_acc"] = score(distilled, data)
    gap = out["teacher_acc"] - out["scratch_student_acc"]
    out["gap_recovered"] = round(
        (out["distilled_student_acc"] - out["scratch_student_acc"]) / gap, 3
    )
    student = distilled.to_classifier()
    out["teacher_params"], out["student_params"] = count(teacher), count(student)
    out["param_ratio"] = round(out["teacher_params"] / out["student_params"], 1)
    images = data.split_dataset("test").tensor
    for batch in (1, 1024):
        x = [images[:batch]]
        us = per_item_us({"teacher": (teacher, x), "student": (student, x)},
                         calls=50 if batch == 1 else 3)  # fmt: skip
        out[f"teacher_us_per_image_batch{batch}"] = us["teacher"]
        out[f"student_us_per_image_batch{batch}"] = us["student"]
    out["student_speedup_batch1024"] = round(
        out["teacher_us_per_image_batch1024"] / out["student_us_per_image_batch1024"], 1
    )
    log.warning(json.dumps(out))
    return out, teacher


class AlternateCache(L.Callback):
    """After the first epoch (which fills the cache), alternate epochs between the cached
    teacher and the live one, timing each: the two sides under the same machine noise."""

    def __init__(self):
        self.seconds: dict = {"cached": [], "live": []}

    def on_train_epoch_start(self, trainer, module):
        module.cache_teacher = trainer.current_epoch == 0 or trainer.current_epoch % 2 == 1
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch > 0:
            side = "cached" if module.cache_teacher else "live"
            self.seconds[side].append(time.perf_counter() - self.start)


def cache_timing(args, teacher) -> dict:
    """Epoch time of the full-label distillation with the cached teacher vs the live one."""
    data = fashion()
    model = student_module(args, teacher, cache_teacher=True)
    timer = AlternateCache()
    fit(model, data, 1 + 2 * args.cache_repeats, callbacks=[timer])
    cached, live = median(timer.seconds["cached"]), median(timer.seconds["live"])
    return {
        "cached_teacher_time_ratio": round(cached / live, 3),
        "cached_epoch_seconds": [round(s, 1) for s in timer.seconds["cached"]],
        "live_epoch_seconds": [round(s, 1) for s in timer.seconds["live"]],
    }


def scarce_labels(args, teacher) -> dict:
    """5,000 labels, the other training images unlabelled and scored by a teacher: the
    full-label teacher (a large model trained elsewhere: it has seen the labels of the
    unlabelled images), and, strictly, a teacher trained on the same 5,000 labels only."""
    labelled = fashion(train_subset=5000)
    pool = fashion(train_subset=5000, unlabeled_rest=True)
    out = {"scarce_labels": 5000, "scarce_unlabeled": pool.unlabeled_count}
    scratch = student_module(args)
    out["scarce_scratch_train_seconds"] = fit(scratch, labelled, args.scarce_scratch_epochs)
    out["scarce_scratch_acc"] = score(scratch, labelled)
    distilled = student_module(args, teacher, cache_teacher=True)
    out["scarce_distilled_train_seconds"] = fit(distilled, pool, args.scarce_distill_epochs)
    out["scarce_distilled_acc"] = score(distilled, pool)
    out["scarce_gain"] = round(out["scarce_distilled_acc"] - out["scarce_scratch_acc"], 4)
    log.warning(json.dumps(out))
    strict_teacher = teacher_cnn(args.teacher_label_smoothing)
    teacher_data = fashion(train_subset=5000, train_transforms=args.scarce_teacher_augment)
    out["scarce_strict_teacher_train_seconds"] = fit(
        strict_teacher, teacher_data, args.scarce_teacher_epochs
    )
    strict_teacher.eval()
    out["scarce_strict_teacher_acc"] = score(strict_teacher, labelled)
    strict = student_module(args, strict_teacher, cache_teacher=True)
    fit(strict, pool, args.scarce_distill_epochs)
    out["scarce_strict_distilled_acc"] = score(strict, pool)
    out["scarce_strict_gain"] = round(
        out["scarce_strict_distilled_acc"] - out["scarce_scratch_acc"], 4
    )
    log.warning(json.dumps(out))
    return out


# --------------------------------------------------------------------------- text
def tweets(tokenizer: str, **kw) -> TextClassificationDataModule:
    data = TextClassificationDataModule("tweets-sentiment", tokenizer=tokenizer, train_subset=2000,
                                        seed=42, **kw)  # fmt: skip
    data.setup("fit")
    return data


def text_student(args, teacher=None):
    """``recipes/tweets/distill_minilm.yaml``'s student: a 2-layer Transformer, BPE ids."""
    net = TransformerEncoder(vocab_size=8000, hidden_size=args.text_width, num_layers=2,
                             num_heads=4, intermediate_size=4 * args.text_width, max_length=64,
                             dropout=0.1, pooling="mean")  # fmt: skip
    common = dict(
        head_dropout=0.1,
        optimizer=partial(torch.optim.AdamW, lr=args.text_lr, weight_decay=0.05),
        scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=args.text_lr),
    )
    if teacher is None:
        return ClassificationModule(net, 3, label_smoothing=0.1, **common)
    return DistillationModule(teacher, net, 3, temperature=args.text_temperature,
                              alpha=args.text_alpha, cache_teacher=True, **common)  # fmt: skip


def text_rows(args) -> dict:
    """MiniLM fine-tuned on 2,000 labels (the transfer recipe) distilled into a tiny
    Transformer with its own tokenizer, on the same labels plus the other training tweets."""
    teacher_data = tweets("all-MiniLM-L6-v2", max_length=48, batch_size=32, eval_batch_size=128)
    L.seed_everything(0, verbose=False)
    teacher = ClassificationModule(
        PretrainedTransformer("all-MiniLM-L6-v2", dropout=0.0), 3, head_dropout=0.1,
        label_smoothing=0.1, optimizer=partial(torch.optim.AdamW, lr=4e-4, weight_decay=0.01),
        scheduler=lambda o, total_steps=None: WarmupCosineLR(o, total_steps, warmup_steps=0.1),
    )  # fmt: skip
    out = {"text_labels": 2000}
    out["text_teacher_train_seconds"] = fit(
        teacher, teacher_data, 2, precision="32-true", gradient_clip_val=1.0,
        callbacks=[DiscriminativeLR(lr_decay=0.7)],
    )  # fmt: skip
    teacher.eval()
    out["text_teacher_acc"] = score(teacher, teacher_data)
    log.warning(json.dumps(out))
    kw = dict(tokenizer="bpe", vocab_size=8000, max_length=64, batch_size=64, eval_batch_size=256)
    labelled = tweets(**kw)
    scratch = text_student(args)
    out["text_scratch_train_seconds"] = fit(scratch, labelled, args.text_scratch_epochs,
                                            precision="32-true", gradient_clip_val=1.0)  # fmt: skip
    out["text_scratch_student_acc"] = score(scratch, labelled)
    pool = tweets(unlabeled_rest=True, **kw)
    out["text_unlabeled"] = pool.unlabeled_count
    distilled = text_student(args, teacher)
    out["text_distill_train_seconds"] = fit(distilled, pool, args.text_epochs,
                                            precision="32-true", gradient_clip_val=1.0)  # fmt: skip
    out["text_student_acc"] = score(distilled, pool)
    out["text_student_over_teacher"] = round(out["text_student_acc"] / out["text_teacher_acc"], 4)
    student = distilled.to_classifier()
    out["text_teacher_params"], out["text_student_params"] = count(teacher), count(student)
    out["text_param_ratio"] = round(count(teacher) / count(student), 1)
    # inference on the first 512 test tweets, each model with its own tokenization
    texts = pool.texts["test"].texts[:512]
    inputs = {}
    for name, tokenizer, length in (("teacher", teacher_data.tokenizer, 48),
                                    ("student", pool.tokenizer, 64)):  # fmt: skip
        enc = tokenizer(
            texts, truncation=True, max_length=length, padding=True, return_tensors="pt"
        )
        inputs[name] = [enc["input_ids"], enc["attention_mask"]]
    us = per_item_us({"teacher": (teacher, inputs["teacher"]),
                      "student": (student, inputs["student"])}, repeats=5, calls=1)  # fmt: skip
    out["text_teacher_us_per_tweet"] = us["teacher"]
    out["text_student_us_per_tweet"] = us["student"]
    out["text_speedup"] = round(
        out["text_teacher_us_per_tweet"] / out["text_student_us_per_tweet"], 1
    )
    log.warning(json.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=["full", "cache", "scarce", "text"],
                        default=["full", "cache", "scarce", "text"])  # fmt: skip
    parser.add_argument("--eval-split", choices=["test", "val"], default="test",
                        help="val: score on the validation split, to choose settings")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="3 batches per epoch")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--teacher-label-smoothing", type=float, default=0.0)
    parser.add_argument("--student", default="cnn16_64_2")
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--student-lr", type=float, default=3e-3)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--mix", choices=["mixup", "cutmix"], default=None,
                        help="mix the distilled student's images (the teacher scores them live)")  # fmt: skip
    parser.add_argument("--augment", default=None, help="train_transforms of the distilled row")
    parser.add_argument("--cache-repeats", type=int, default=3)
    parser.add_argument("--scarce-teacher-epochs", type=int, default=30)
    parser.add_argument("--scarce-teacher-augment", default="light")
    parser.add_argument("--scarce-scratch-epochs", type=int, default=30)
    parser.add_argument("--scarce-distill-epochs", type=int, default=8)
    parser.add_argument("--text-width", type=int, default=128)
    parser.add_argument("--text-lr", type=float, default=1e-3)
    parser.add_argument("--text-temperature", type=float, default=2.0)
    parser.add_argument("--text-alpha", type=float, default=0.9)
    parser.add_argument("--text-scratch-epochs", type=int, default=5)
    parser.add_argument("--text-epochs", type=int, default=5)
    args = parser.parse_args()
    global SPLIT
    SPLIT = args.eval_split
    if args.smoke:
        SMOKE.update(limit_train_batches=3)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("lightning.pytorch", "lightning.fabric", "lifecycle", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    start = time.perf_counter()
    result: dict = {"eval_split": SPLIT}
    teacher = None
    if {"full", "cache", "scarce"} & set(args.only):
        full, teacher = full_labels(args)
        if "full" in args.only:
            result.update(full)
    if "cache" in args.only:
        result.update(cache_timing(args, teacher))
    if "scarce" in args.only:
        result.update(scarce_labels(args, teacher))
    if "text" in args.only:
        result.update(text_rows(args))
    result["targets"] = {
        "gap_recovered": ">= 0.5",
        "scarce_distilled_acc": ">= scarce_scratch_acc + 0.03",
        "text_student_acc": ">= 0.95 * text_teacher_acc, at >= 10x fewer parameters",
    }
    met = {}
    if "gap_recovered" in result:
        met["gap_recovered"] = result["gap_recovered"] >= 0.5
    if "scarce_gain" in result:
        met["scarce"] = result["scarce_gain"] >= 0.03
    if "text_student_over_teacher" in result:
        met["text"] = (
            result["text_student_over_teacher"] >= 0.95 and result["text_param_ratio"] >= 10
        )
    result["met"] = met
    result["settings"] = vars(args)
    result["total_minutes"] = round((time.perf_counter() - start) / 60, 1)
    name = "distillation" if SPLIT == "test" and not args.smoke else f"distillation_{SPLIT}"
    write_result(name if not args.smoke else "distillation_smoke", result)


if __name__ == "__main__":
    main()
