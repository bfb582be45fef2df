"""Text baselines: tweet sentiment (3 classes) with TF-IDF + logistic regression and with the
toolkit's RNN, 1-D CNN and Transformer recipes, on one fixed seeded split.

Every model sees the same split: the one ``TextClassificationDataModule`` makes with the
recipes' data settings (seed 42, 10% validation, 20% test, identical texts never in two
splits). The classical anchor is TF-IDF over word 1-2 grams (sublinear tf) + logistic
regression with ``C`` picked on the validation split. Each neural model runs its recipe as
``lifecycle fit`` would, then tests the best checkpoint.

Targets: each neural run within 10 minutes on 2 CPU cores; the best neural model's test
accuracy >= TF-IDF's (about 0.756 in shared/ANCHORS.md, on a split that keeps duplicates).

    python benchmarks/text_baselines.py [--models tfidf rnn cnn transformer]

Writes ``benchmarks/results/text_baselines.json`` with a row per model: ``accuracy``,
``macro_f1``, ``params``, ``train_seconds``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    "rnn": "recipes/tweets/classify_rnn.yaml",
    "cnn": "recipes/tweets/classify_cnn.yaml",
    "transformer": "recipes/tweets/classify_transformer.yaml",
}
TIME_LIMIT_S = 600
ANCHOR_TFIDF = 0.756


def cli_for(recipe: str, root: str, run=False):
    from lightning.pytorch import LightningDataModule, LightningModule

    from lifecycle.cli import LifecycleCLI

    return LifecycleCLI(
        LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        seed_everything_default=42, auto_configure_optimizers=False, run=run,
        args=["--config", str(REPO / recipe), "--trainer.default_root_dir", root,
              "--trainer.enable_progress_bar", "false", "--run_name", Path(recipe).stem],
    )  # fmt: skip


def tfidf_row(data) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    train, val, test = (data.texts[s] for s in ("train", "val", "test"))
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train = vectorizer.fit_transform(train.texts)
    x_val = vectorizer.transform(val.texts)
    best = None
    for c in (0.3, 1.0, 3.0, 10.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, train.labels)
        score = accuracy_score(val.labels, model.predict(x_val))
        if best is None or score > best[0]:
            best = (score, c, model)
    seconds = time.perf_counter() - start
    _, c, model = best
    pred = model.predict(vectorizer.transform(test.texts))
    return {
        "name": "tfidf",
        "model": f"TF-IDF word 1-2 grams + logistic regression (C={c}, picked on val)",
        "accuracy": round(accuracy_score(test.labels, pred), 4),
        "macro_f1": round(f1_score(test.labels, pred, average="macro"), 4),
        "params": int(model.coef_.size + model.intercept_.size),
        "train_seconds": round(seconds, 1),
    }


def neural_row(name: str, root: str) -> dict:
    cli = cli_for(RECIPES[name], root)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    report = json.loads((Path(cli.trainer.log_dir) / "metrics.json").read_text())
    return {
        "name": name,
        "model": type(cli.model.backbone).__name__,
        "recipe": RECIPES[name],
        "accuracy": round(report["metrics"]["accuracy"], 4),
        "macro_f1": round(report["metrics"]["f1"], 4),
        "params": sum(p.numel() for p in cli.model.parameters()),
        "train_seconds": round(seconds, 1),
        "epochs": cli.trainer.current_epoch,
        "test_samples": int(sum(map(sum, report["confusion_matrix"]))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tfidf", *RECIPES])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        if "tfidf" in args.models:
            data = cli_for(RECIPES["rnn"], root).datamodule
            data.setup("fit")
            rows.append(tfidf_row(data))
            split = {name: len(t) for name, t in data.texts.items()}
        for name in (m for m in args.models if m in RECIPES):
            rows.append(neural_row(name, root))
            print(json.dumps(rows[-1]))
    neural = [r for r in rows if r["name"] != "tfidf"]
    tfidf = next((r for r in rows if r["name"] == "tfidf"), None)
    best = max(neural, key=lambda r: r["accuracy"]) if neural else None
    write_result(
        "text_baselines",
        {
            "dataset": "tweets-sentiment (3 classes), deduplicated, seed 42",
            "split": split if tfidf else None,
            "rows": rows,
            "best_neural": best["name"] if best else None,
            "best_neural_minus_tfidf": round(best["accuracy"] - tfidf["accuracy"], 4)
            if best and tfidf
            else None,
            "time_limit_seconds": TIME_LIMIT_S,
            "anchor_tfidf_accuracy_published": ANCHOR_TFIDF,
            "meets_target": bool(
                best
                and tfidf
                and best["accuracy"] >= tfidf["accuracy"]
                and all(r["train_seconds"] <= TIME_LIMIT_S for r in neural)
            ),
        },
    )


if __name__ == "__main__":
    main()
