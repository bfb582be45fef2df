"""Cleaning benchmark: label issues, duplicates and what cleaning buys, on Fashion-MNIST with
known injected problems; and near-duplicate text detection speed.

1. Data: a stratified 20,000-image Fashion-MNIST training subset; 10% of its labels flipped to
   another class at random (symmetric noise); then 3% exact copies and 3% near copies (half
   shifted by 1-2 pixels, half with Gaussian noise of std 12 grey levels) of random records
   appended, copies keeping their original's (possibly flipped) label. 21,200 records in all,
   saved as an ``.npz`` with the 10k Fashion-MNIST test set as its test split.
2. ``DataCleaner`` (``label_issues: drop``) with the clean recipe's model
   (``recipes/fashion_mnist/clean.yaml``): 5 folds of ``--fold-epochs`` epochs each.
   - exact / near duplicates: recall over the injected copies (a copy counts as found when it
     or its original is flagged as a copy of the other); near-duplicate precision over every
     near-duplicate finding (Fashion-MNIST's own look-alikes count against it);
   - label issues: precision, recall, F1 against the flipped labels, on the records that went
     into K-fold training; beside cleanlab's ``find_label_issues`` (default settings) on the
     same out-of-fold probabilities.
3. The same cleaning with ``max_self_confidence: --confident-cut`` (0.05), from the saved
   out-of-fold probabilities: only label issues whose given label got at most that probability
   are dropped; their precision and recall (``label_confident_*``).
4. Accuracy: the classify recipe's model and schedule (``--epochs``) trained on all 21,200 noisy
   records (``acc_noisy``), on the records plain confident learning kept (``acc_cleaned``), on
   those the confident-only cleaning kept (``acc_cleaned_confident``), and on the 20k images with
   their true labels and no copies (``acc_oracle``); tested on the 10k test set; the four
   trainings alternate within each of ``--seeds`` seeds, medians reported.
5. Near-duplicate texts (last, once the training has freed the cores): the tweets plus synthetic variants (a word reversed and a suffix
   added), 10k, 30k and 100k texts, median seconds of 3 runs of
   ``near_duplicate_text_pairs``.

Targets: label F1 >= cleanlab's - 0.02; exact-duplicate recall 1.0; near-duplicate recall >= 0.9
at precision >= 0.95; accuracy gain >= 0.02; 100k texts within 60 s.

``acc_oracle`` bounds what any cleaning can gain here (``acc_gain_ceiling``): the recipe (label
smoothing 0.1, dropout 0.3, weight decay 0.05, 15 epochs) loses well under 2 points to 10%
symmetric noise, so the +2 point target is above what this model and budget allow (see the
README). Also measured, one seed each (same data, 15 epochs): down-weighting the flagged records
to 0.2 instead of dropping them 0.9122; relabeling instead of dropping (fold epochs 4) 0.8982,
because 41% of the suggested labels were wrong; the recipe's CNN without label smoothing and
dropout: noisy 0.9107, cleaned 0.9085, oracle 0.9093; the recipe at 40 epochs: noisy 0.9095,
confident-only cleaned 0.9238, oracle 0.9254 (+1.43 of a +1.59 ceiling).

    pip install -e ".[bench]"   # cleanlab, for the comparison only
    python benchmarks/cleaning.py [--fold-epochs 8] [--epochs 15] [--seeds 3] [--policy drop]

Writes ``benchmarks/results/cleaning.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUBSET, NOISE, EXACT, NEAR = 20_000, 0.10, 0.03, 0.03


def make_dataset(path: Path, seed: int = 0) -> dict:
    """The noisy, duplicated training set as an ``.npz``; returns the ground truth."""
    from lifecycle.data.datasets import load_fashion_mnist
    from lifecycle.data.splits import stratified_subset

    data = load_fashion_mnist()
    rng = np.random.default_rng(seed)
    idx = stratified_subset(data.train.y, SUBSET, seed)
    x, y = data.train.x[idx].copy(), data.train.y[idx].copy()
    true_y = y.copy()
    flipped = rng.random(len(y)) < NOISE
    y[flipped] = (y[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    n_exact, n_near = int(EXACT * SUBSET), int(NEAR * SUBSET)
    exact_src = rng.choice(SUBSET, n_exact, replace=False)
    near_src = rng.choice(SUBSET, n_near, replace=False)
    near = []
    for k, s in enumerate(near_src):
        img = x[s, ..., 0].astype(np.float32)
        if k % 2 == 0:
            shift = rng.integers(-2, 3, 2)
            shift[1] = shift[1] or 1
            img = np.roll(img, tuple(int(v) for v in shift), axis=(0, 1))
        else:
            img = img + rng.normal(0, 12, img.shape)
        near.append(np.clip(img, 0, 255).round().astype(np.uint8)[..., None])
    x_all = np.concatenate([x, x[exact_src], np.stack(near)])
    y_all = np.concatenate([y, y[exact_src], y[near_src]])
    np.savez(path, x=x_all, y=y_all, x_test=data.test.x, y_test=data.test.y,
             class_names=np.array(data.class_names))  # fmt: skip
    # the oracle: the same 20k images with their true labels and no copies
    np.savez(path.with_name("oracle.npz"), x=x, y=true_y, x_test=data.test.x, y_test=data.test.y,
             class_names=np.array(data.class_names))  # fmt: skip
    exact_pairs = {(int(s), SUBSET + k) for k, s in enumerate(exact_src)}
    near_pairs = {(int(s), SUBSET + n_exact + k) for k, s in enumerate(near_src)}
    flipped_all = np.concatenate([flipped, flipped[exact_src], flipped[near_src]])
    return {"exact": exact_pairs, "near": near_pairs, "flipped": flipped_all,
            "true": np.concatenate([true_y, true_y[exact_src], true_y[near_src]])}  # fmt: skip


def cli(*args: str):
    from lifecycle.cli import CleanCLI, LifecycleCLI, recipe_cli

    cls = CleanCLI if "clean.yaml" in args[1] else LifecycleCLI
    return recipe_cli(cls, [*args, "--trainer.enable_progress_bar", "false"])


def prf(found: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((found & truth).sum())
    precision = tp / max(int(found.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "flagged": int(found.sum())}  # fmt: skip


def clean(npz: Path, root: Path, fold_epochs: int, truth: dict, policy: str) -> dict:
    from cleanlab.filter import find_label_issues as cleanlab_find_label_issues

    from lifecycle.cli import fold_trainer_kwargs
    from lifecycle.data.cleaning.label_issues import find_label_issues

    # plain confident learning (the recipe's max_self_confidence cut is step 3)
    run = cli("--config", str(REPO / "recipes/fashion_mnist/clean.yaml"),
              "--data.init_args.dataset", str(npz), "--trainer.max_epochs", str(fold_epochs),
              "--cleaning.label_issues", policy, "--cleaning.max_self_confidence", "1.0")  # fmt: skip
    start = time.perf_counter()
    result = run.config_init["cleaning"].run(
        run.datamodule, run.model, fold_trainer_kwargs(run), root / "clean"
    )
    seconds = time.perf_counter() - start
    position = {s: i for i, s in enumerate(result.records.sources)}
    index = lambda f: position[f.source]  # noqa: E731
    flagged = {kind: {} for kind in ("exact duplicate", "near duplicate", "label issue")}
    relabeled_right = sum(
        f.kind == "label issue"
        and f.suggested == result.records.class_names[truth["true"][index(f)]]
        for f in result.findings
    )
    for f in result.findings:
        if f.kind in flagged:
            flagged[f.kind][index(f)] = f.other

    def copies_found(pairs: set, kind: str) -> tuple[int, int]:
        found = flagged[kind]
        hits = sum(found.get(b) == a or found.get(a) == b for a, b in pairs)
        correct = sum((min(i, o), max(i, o)) in pairs for i, o in found.items())
        return hits, correct

    exact_hits, _ = copies_found(truth["exact"], "exact duplicate")
    near_hits, near_correct = copies_found(truth["near"], "near duplicate")
    # label issues on the records K-fold training saw (duplicates dropped first)
    probs = result.probabilities
    seen = ~np.isnan(probs[:, 0])
    labels = result.records.labels[seen]
    ours = find_label_issues(labels, probs[seen]).mask
    theirs = cleanlab_find_label_issues(labels, probs[seen])
    stage_mask = np.zeros(len(result.records), bool)
    stage_mask[list(flagged["label issue"])] = True
    assert (stage_mask[seen] == ours).all()  # the stage flagged exactly what the function found
    truth_flipped = truth["flipped"][seen]
    ours_m, theirs_m = prf(ours, truth_flipped), prf(theirs, truth_flipped)
    return {
        "clean_seconds": round(seconds, 1),
        "kept": int(len(result.kept)),
        "records": len(result.records),
        "out_of_fold_accuracy": result.summary["out_of_fold_accuracy"],
        "estimated_noise_rate": result.summary["estimated_noise_rate"],
        "exact_dup_recall": round(exact_hits / len(truth["exact"]), 4),
        "near_dup_recall": round(near_hits / len(truth["near"]), 4),
        "near_dup_precision": round(near_correct / max(len(flagged["near duplicate"]), 1), 4),
        "near_dup_flagged": len(flagged["near duplicate"]),
        "leakage_flagged": sum(f.kind == "leakage" for f in result.findings),
        "label_precision": ours_m["precision"],
        "label_recall": ours_m["recall"],
        "label_f1": ours_m["f1"],
        "label_flagged": ours_m["flagged"],
        "cleanlab_label_precision": theirs_m["precision"],
        "cleanlab_label_recall": theirs_m["recall"],
        "cleanlab_label_f1": theirs_m["f1"],
        "cleanlab_label_flagged": theirs_m["flagged"],
        "label_agreement_with_cleanlab": round(float((ours == theirs).mean()), 5),
        "suggested_label_is_true_label": round(relabeled_right / max(ours_m["flagged"], 1), 4),
    }, root / "clean" / "manifest.csv"


def accuracy(
    npz: Path, root: Path, epochs: int, manifest: Path | None, name: str, seed: int
) -> float:
    args = ["--config", str(REPO / "recipes/fashion_mnist/classify.yaml"),
            "--data.init_args.dataset", str(npz), "--trainer.max_epochs", str(epochs),
            "--trainer.default_root_dir", str(root), "--trainer.enable_model_summary", "false",
            "--seed_everything", str(seed), "--run_name", f"{name}-seed{seed}"]  # fmt: skip
    if manifest is not None:
        args += ["--data.init_args.cleaned_manifest", str(manifest)]
    run = cli(*args)
    run.trainer.fit(run.model, datamodule=run.datamodule)
    result = run.trainer.test(run.model, datamodule=run.datamodule, ckpt_path="best", verbose=False)
    return round(result[0]["test/accuracy"], 4)


def confident_only(npz: Path, root: Path, truth: dict, cut: float) -> tuple[dict, Path]:
    """The same cleaning with ``max_self_confidence: cut``, from the saved out-of-fold
    probabilities (no training): precision and recall of the label issues it drops."""
    from lifecycle.data import ImageClassificationDataModule
    from lifecycle.data.cleaning import DataCleaner

    cleaner = DataCleaner(max_self_confidence=cut,
                          probabilities=str(root / "clean" / "out_of_fold_probabilities.npy"))  # fmt: skip
    result = cleaner.run(ImageClassificationDataModule(str(npz)), out_dir=root / "clean_confident")
    position = {s: i for i, s in enumerate(result.records.sources)}
    dropped = np.zeros(len(result.records), bool)
    dropped[[position[f.source] for f in result.findings
             if f.kind == "label issue" and f.action == "dropped"]] = True  # fmt: skip
    seen = ~np.isnan(result.probabilities[:, 0])
    m = prf(dropped[seen], truth["flipped"][seen])
    return {
        "label_confident_cut": cut,
        "label_confident_precision": m["precision"],
        "label_confident_recall": m["recall"],
        "label_confident_dropped": m["flagged"],
    }, root / "clean_confident" / "manifest.csv"


def text_speed(sizes=(10_000, 30_000, 100_000), repeats: int = 3) -> dict:
    from lifecycle.data.cleaning.duplicates import near_duplicate_text_pairs
    from lifecycle.data.corpora import load_text_dataset

    texts = list(load_text_dataset("tweets-sentiment").texts)
    rng = np.random.default_rng(0)
    pool = list(texts)
    while len(pool) < max(sizes):
        words = texts[rng.integers(len(texts))].split()
        if words:
            i = int(rng.integers(len(words)))
            words[i] = words[i][::-1]
        pool.append(" ".join(words) + f" #{int(rng.integers(1000))}")
    order = rng.permutation(len(pool))
    pool = [pool[i] for i in order]
    seconds, pairs = {}, {}
    for n in sizes:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            found = near_duplicate_text_pairs(pool[:n])
            runs.append(time.perf_counter() - start)
        seconds[str(n)] = round(statistics.median(runs), 2)
        pairs[str(n)] = len(found)
    return {"near_dup_seconds": seconds, "near_dup_text_links": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fold-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--policy", default="drop", choices=["drop", "relabel", "downweight"],
                        help="what the cleaning does with label issues")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per accuracy")
    parser.add_argument("--confident-cut", type=float, default=0.05,
                        help="max_self_confidence of the second cleaning (acc_cleaned_confident)")  # fmt: skip
    parser.add_argument("--skip-accuracy", action="store_true", help="no before/after training")
    parser.add_argument(
        "--work", help="keep the data and runs in this folder (default: a temporary one)"
    )
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.work or tmp)
        root.mkdir(parents=True, exist_ok=True)
        npz = root / "fashion_noisy.npz"
        truth = make_dataset(npz)
        cleaning, manifest = clean(npz, root, args.fold_epochs, truth, args.policy)
        result.update(cleaning)
        confident, confident_manifest = confident_only(npz, root, truth, args.confident_cut)
        result.update(confident)
        if not args.skip_accuracy:
            # the four trainings alternate within each seed; medians over the seeds
            sides = {
                "acc_noisy": (npz, None),
                "acc_cleaned": (npz, manifest),
                "acc_cleaned_confident": (npz, confident_manifest),
                # context, not a target: the same images with their true labels and no copies
                "acc_oracle": (npz.with_name("oracle.npz"), None),
            }
            runs: dict[str, list[float]] = {key: [] for key in sides}
            for seed in range(args.seeds):
                for key, (data, kept) in sides.items():
                    runs[key].append(accuracy(data, root, args.epochs, kept, key[4:], seed))
                    print(key, seed, runs[key][-1], flush=True)
            for key, values in runs.items():
                result[key] = round(statistics.median(values), 4)
            result["acc_runs"] = runs
            result["acc_gain"] = round(result["acc_cleaned"] - result["acc_noisy"], 4)
            result["acc_gain_confident"] = round(
                result["acc_cleaned_confident"] - result["acc_noisy"], 4
            )
            result["acc_gain_ceiling"] = round(result["acc_oracle"] - result["acc_noisy"], 4)
    # last, so the timing runs after the training has freed the cores
    result.update(text_speed())
    result["setup"] = (
        f"Fashion-MNIST stratified {SUBSET} + {int(EXACT * SUBSET)} exact + {int(NEAR * SUBSET)} "
        f"near copies, {NOISE:.0%} symmetric label noise; 5 folds x {args.fold_epochs} epochs; "
        f"label issues: {args.policy}; "
        f"accuracy: recipes/fashion_mnist/classify.yaml, {args.epochs} epochs, best val/loss "
        f"checkpoint, 10k test set, median of {args.seeds} seeds"
    )
    result["targets"] = {
        "label_f1": ">= cleanlab_label_f1 - 0.02", "exact_dup_recall": "1.0",
        "near_dup_recall": ">= 0.9 at near_dup_precision >= 0.95", "acc_gain": ">= 0.02",
        "near_dup_seconds[100000]": "<= 60",
    }  # fmt: skip
    result["meets_target"] = bool(
        result["label_f1"] >= result["cleanlab_label_f1"] - 0.02
        and result["exact_dup_recall"] == 1.0
        and result["near_dup_recall"] >= 0.9
        and result["near_dup_precision"] >= 0.95
        and result.get("acc_gain", 0) >= 0.02
        and result["near_dup_seconds"]["100000"] <= 60
    )
    write_result("cleaning", result)


if __name__ == "__main__":
    main()
