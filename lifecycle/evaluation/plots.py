"""Matplotlib figures for evaluation: confusion matrix, ROC curves, predicted vs true, training curves."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

# Figures are built with the object-oriented API (no pyplot): no global state, no GUI backend,
# nothing to close. In Jupyter, `%matplotlib inline` makes a returned Figure display as an image.


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def plot_confusion_matrix(matrix, class_names: list[str], title: str = "Confusion matrix (test)"):
    """Counts in each cell, colours by share of the true class (row-normalized)."""
    m = _np(matrix).astype(np.int64)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = max(4.5, 0.55 * n + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    accuracy = np.trace(m) / max(m.sum(), 1)
    ax.set_title(f"{title}: accuracy {accuracy:.3f}")
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    return fig


def plot_roc(fpr, tpr, class_names: list[str], auroc: list[float]):
    """One-vs-rest ROC curve per class (or the positive class's for binary tasks), AUROC in the legend."""
    fig = Figure(figsize=(6, 5.5))
    ax = fig.subplots()
    cmap = colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for i, (f, t, name, auc) in enumerate(zip(fpr, tpr, class_names, auroc, strict=True)):
        ax.plot(_np(f), _np(t), color=cmap(i % cmap.N), lw=1.5, label=f"{name} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title("ROC curves (test)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_predicted_vs_true(pred, target):
    """Scatter of predictions against true values with the identity line."""
    p, t = _np(pred).ravel(), _np(target).ravel()
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    ax.scatter(t, p, s=14, alpha=0.7)
    lo, hi = float(min(p.min(), t.min())), float(max(p.max(), t.max()))
    ax.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=1, label="perfect prediction")
    ax.set_xlabel("True value")
    ax.set_ylabel("Predicted value")
    ax.set_title(f"Predicted vs true (test, n={len(t)})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def read_metrics_csv(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read Lightning's CSVLogger ``metrics.csv`` into ``{metric: (steps, values)}``, skipping empty cells."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = float(row.get("step") or 0)
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                series[key].append((step, float(value)))
    return {
        k: (np.array([s for s, _ in v]), np.array([x for _, x in v])) for k, v in series.items()
    }


def plot_curves(
    runs: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    metric: str,
    title: str | None = None,
    logy: bool = False,
):
    """One line per run of ``metric`` against the step, e.g. to compare optimizers on one figure."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, series in runs.items():
        if metric in series:
            steps, values = series[metric]
            ax.plot(steps, values, lw=1.5, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title or metric)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
