"""The cleaning report: ``report.md`` with its plots (class balance before and after, grids of
flagged images, tables of flagged texts); ``report.json`` is written by the stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_class_balance(before: dict[str, int], after: dict[str, int]) -> Figure:
    """Records per class before and after cleaning, side by side."""
    names = list(before)
    x = np.arange(len(names))
    fig = Figure(figsize=(max(5.0, 0.6 * len(names) + 2), 3.6))
    ax = fig.subplots()
    ax.bar(x - 0.2, [before[n] for n in names], 0.4, label="before", color="#9ab")
    ax.bar(x + 0.2, [after.get(n, 0) for n in names], 0.4, label="after", color="#236")
    ax.set_xticks(
        x, names, rotation=45 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center"
    )
    ax.set_ylabel("records")
    ax.set_title("Class balance before and after cleaning")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_image_grid(
    images: list[np.ndarray], captions: list[str], title: str, columns: int = 8
) -> Figure:
    """Images (H, W, C uint8) with a caption under each, ``columns`` per row."""
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(1.5 * columns, 1.75 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, caption in zip(axes, images, captions, strict=False):
        grey = image.shape[-1] == 1
        ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _short(text: str, width: int = 110) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def write_report(result, out_dir: Path) -> Path:
    """Write ``report.md`` and its figures for a :class:`~lifecycle.data.cleaning.stage.CleaningResult`."""
    records, summary = result.records, result.summary
    names = records.class_names
    show = summary["settings"]["show"]
    lines = [
        "# Cleaning report",
        "",
        f"{summary['records']} records examined, **{summary['kept']} kept**"
        + (
            f"; {summary['unreadable']} unreadable records left out"
            if summary["unreadable"]
            else ""
        )
        + (
            f"; {summary['changed_while_reading']} records changed while reading (see `removed.csv`)"
            if summary["changed_while_reading"]
            else ""
        )
        + ".",
        "",
    ]
    if "estimated_noise_rate" in summary:
        lines += [
            f"Out-of-fold accuracy {summary['out_of_fold_accuracy']:.3f}; estimated share of wrong "
            f"labels (confident learning) {summary['estimated_noise_rate']:.3f}.",
            "",
        ]
    lines += ["| finding | records |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["findings"].items()] or ["| none | 0 |"]
    lines += ["", "Every removed or changed record is listed with its reason in `removed.csv`; "
              "every finding (flags too) in `findings.csv`. Train on the result with "
              "`cleaned_manifest: <this folder>/manifest.csv`.", ""]  # fmt: skip
    fig = plot_class_balance(summary["class_counts_before"], summary["class_counts_after"])
    fig.savefig(out_dir / "class_balance.png", dpi=110)
    lines += [
        f"## Class balance (largest / smallest class: {summary['imbalance_before']} before, "
        f"{summary['imbalance_after']} after)",
        "",
        "![class balance](class_balance.png)",
        "",
    ]
    by_kind: dict[str, list] = {}
    for f in result.findings:
        by_kind.setdefault(f.kind, []).append(f)
    for kind, found in by_kind.items():
        found = found[:show]
        lines += [f"## {kind.capitalize()}: the first {len(found)}", ""]
        if records.kind == "image":
            if kind == "label issue":
                images = [records.items[f.index] for f in found]
                captions = [f"{names[records.labels[f.index]]} → {f.suggested}" for f in found]
            else:  # each record beside the one it copies
                n = len(records)
                images, captions = [], []
                for f in found:
                    other = (
                        records.items[f.other] if f.other < n else records.test_items[f.other - n]
                    )
                    images += [records.items[f.index], other]
                    captions += [f.action, "test record" if f.other >= n else "kept"]
            file = f"flagged_{kind.replace(' ', '_')}.png"
            plot_image_grid(images, captions, kind).savefig(out_dir / file, dpi=110)
            lines += [f"![{kind}]({file})", ""]
        lines += ["| record | action | detail |", "|---|---|---|"]
        for f in found:
            text = f" — “{_short(records.items[f.index], 80)}”" if records.kind == "text" else ""
            lines.append(f"| {_short(f.source, 60)}{text} | {f.action} | {_short(f.detail)} |")
        lines.append("")
    if records.issues:
        lines += ["## Records left out or changed while reading", "",
                  "| record | reason | action | detail |", "|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {_short(i.source, 60)} | {i.reason} | {i.action} | {_short(i.detail)} |"
            for i in records.issues[:show]
        ]
        lines.append("")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
