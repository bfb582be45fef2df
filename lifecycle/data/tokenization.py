"""Tokenizers: trained locally with ``tokenizers`` on the training texts, or loaded from a folder.

A trained tokenizer is returned as a ``transformers.PreTrainedTokenizerFast``, so it saves with
``save_pretrained`` and any transformers code (``AutoTokenizer.from_pretrained``) loads it.
Both kinds use BERT's special tokens, with ``[PAD]`` at id 0, and wrap every text as
``[CLS] text [SEP]``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lifecycle.compat import plain_fast_tokenizer_backend
from lifecycle.errors import ConfigError, DataError, MissingFileError
from lifecycle.packaged import resolve_model_folder

TokenizerAlgorithm = Literal["wordpiece", "bpe"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# what save_pretrained writes for one tokenizer kind or another: a folder with none of them
# holds no tokenizer at all (missing), one with some that fail to load holds a broken one
TOKENIZER_FILE_NAMES = (
    *TOKENIZER_FILES,
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "added_tokens.json",
)


def train_tokenizer(
    texts: list[str],
    algorithm: TokenizerAlgorithm = "bpe",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
    max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a WordPiece or byte-level BPE tokenizer on ``texts``.

    Args:
        texts: the training texts (the training split only, so no held-out text shapes the vocabulary).
        algorithm: ``"bpe"`` (byte-level, GPT-2-style; never produces ``[UNK]``; the same
            vocabulary on every run) or ``"wordpiece"`` (BERT-style; unknown characters become
            ``[UNK]``). ``tokenizers`` 0.23 trains WordPiece non-deterministically: its
            ``##`` tokens get ids in hash-map order, which breaks ties between equally frequent
            merges differently from run to run (huggingface/tokenizers#1794).
        vocab_size: the largest vocabulary, special tokens included; a small corpus may give fewer.
        min_frequency: a merge or word piece must occur this often to enter the vocabulary.
        lowercase: lowercase before tokenizing (texts are NFKC-normalized either way).
        max_length: the tokenizer's ``model_max_length``.

    Returns:
        The tokenizer, with ``pad_token`` ``[PAD]`` (id 0), ``unk``, ``cls``, ``sep`` and ``mask`` set.
    """
    if algorithm not in ("wordpiece", "bpe"):
        raise ConfigError(f"`tokenizer` algorithm must be 'wordpiece' or 'bpe', got {algorithm!r}.")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"`vocab_size` must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}.")
    if not texts:
        raise DataError("Cannot train a tokenizer on no texts: the training split is empty.")
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    if algorithm == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """A Hugging Face tokenizer saved in a local folder (``save_pretrained`` output), or a
    packaged model's by name (``all-MiniLM-L6-v2``: see :mod:`lifecycle.packaged`). No
    network is used.

    A tokenizer without a padding token gets its end-of-text token as padding (GPT-2 style).

    Raises:
        MissingFileError: the folder does not exist or holds no tokenizer files.
        DataError: the folder's tokenizer files cannot be loaded (the message names the file
            and says what transformers found wrong).
        ConfigError: the tokenizer has neither a pad nor an end-of-text token.
    """
    folder = resolve_model_folder(path)
    if not folder.is_dir():
        raise MissingFileError(
            f"Tokenizer folder {folder.resolve()} does not exist. Fix: set `tokenizer` to "
            "'wordpiece' or 'bpe' to train one, or to a folder written by save_pretrained "
            "(e.g. runs/<run>/version_N/tokenizer)."
        )
    present = [name for name in TOKENIZER_FILE_NAMES if (folder / name).is_file()]
    if not present:
        found = sorted(p.name for p in folder.iterdir())[:12]
        raise MissingFileError(
            f"{folder} holds no tokenizer files (none of {', '.join(TOKENIZER_FILE_NAMES)}; it "
            f"holds {found}). Fix: point `tokenizer` at a folder written by save_pretrained, "
            "with tokenizer.json or a vocabulary file and tokenizer_config.json."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:  # noqa: BLE001 - tokenizers' own errors are plain Exceptions
        raise DataError(
            f"The tokenizer in {folder} cannot be loaded: {_broken_file(folder, present)} "
            f"({type(err).__name__}: {err}). Fix: save the tokenizer again with "
            "save_pretrained, or point `tokenizer` at another folder."
        ) from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(
                f"The tokenizer in {folder} has neither a pad nor an end-of-text token, so "
                "batches cannot be padded. Fix: add a pad token and save it again."
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _broken_file(folder: Path, present: list[str]) -> str:
    """Which of the tokenizer files in ``folder`` is at fault, as far as can be told: the first
    JSON file that does not parse, else the files transformers read."""
    for name in present:
        if name.endswith(".json"):
            try:
                json.loads((folder / name).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                return f"{folder / name} is not valid JSON ({err})"
    main = "tokenizer.json" if "tokenizer.json" in present else ", ".join(present)
    return f"{folder / main} does not describe a tokenizer transformers can build"


def tokenizer_state(tokenizer: PreTrainedTokenizerBase) -> dict[str, str | bytes]:
    """The tokenizer's saved files as ``{file name: content}``: small, and safe in a
    ``weights_only`` checkpoint. A UTF-8 file is kept as text, any other (a SentencePiece
    model, ...) as bytes; both come back byte for byte (:func:`write_tokenizer_files`)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        state: dict[str, str | bytes] = {}
        for p in sorted(Path(tmp).iterdir()):
            if not p.is_file():
                continue
            data = p.read_bytes()
            try:
                state[p.name] = data.decode("utf-8")
            except UnicodeDecodeError:
                state[p.name] = data
        return state


def write_tokenizer_files(state: dict[str, str | bytes], folder: str | os.PathLike) -> None:
    """Write the files of a :func:`tokenizer_state` into ``folder``, exactly as they were saved
    (text as UTF-8, with its own line endings)."""
    for name, content in state.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (Path(folder) / name).write_bytes(data)


def tokenizer_from_state(state: dict[str, str | bytes]) -> PreTrainedTokenizerBase:
    """Inverse of :func:`tokenizer_state`."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_files(state, tmp)
        return load_tokenizer(tmp)


def embedding_rows_needed(tokenizer: PreTrainedTokenizerBase) -> int:
    """How many embedding rows a model needs for the ids ``tokenizer`` gives: one past the
    largest (``len(tokenizer)`` unless its ids have gaps)."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)


def _truncated_encodings(tokenizer, texts: list[str], max_length: int) -> list | None:
    """``tokenizers.Encoding`` of each text, with special tokens, cut at ``max_length`` (the
    rest in its ``overflowing`` windows), straight from the Rust tokenizer: what
    ``tokenizer(texts, truncation=True, max_length=max_length)`` encodes, without building its
    Python dicts (ids, type ids and masks of every text, a second of a 50,000-text corpus).
    The backend's truncation, padding and special-token settings are set as transformers sets
    them for that call and given back afterwards. ``None`` where there is no such backend
    (:func:`lifecycle.compat.plain_fast_tokenizer_backend`)."""
    backend = plain_fast_tokenizer_backend(tokenizer)
    if backend is None:
        return None
    truncation, padding = backend.truncation, backend.padding
    special = backend.encode_special_tokens
    try:
        backend.enable_truncation(
            max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side
        )
        if padding is not None:
            backend.no_padding()
        backend.encode_special_tokens = bool(tokenizer.split_special_tokens)
        return backend.encode_batch(list(texts), add_special_tokens=True)
    finally:
        if truncation is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(**truncation)
        if padding is not None:
            backend.enable_padding(**padding)
        backend.encode_special_tokens = special


def encode(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids of each text (with special tokens), truncated to ``max_length``; and how many
    texts were truncated.

    A truncated text is cut by the tokenizer itself, so it keeps its own closing special
    tokens (``[SEP]``, ``</s>``, none for GPT-2), exactly as the tokenizer adds them; texts that
    fit are as the tokenizer encodes them. A fast tokenizer encodes once, in Rust (a text was
    truncated when it has overflowing tokens); any other is called twice (with one token of
    slack, then the long texts again): the same ids either way.
    """
    encodings = _truncated_encodings(tokenizer, texts, max_length)
    if encodings is not None:
        ids = [e.ids for e in encodings]
        return ids, sum(1 for e in encodings if e.overflowing)
    # one token of slack tells which texts were longer (and keeps transformers from warning)
    ids = tokenizer(texts, truncation=True, max_length=max_length + 1)["input_ids"]
    long = [i for i, x in enumerate(ids) if len(x) > max_length]
    if long:
        cut = tokenizer([texts[i] for i in long], truncation=True, max_length=max_length)
        for i, x in zip(long, cut["input_ids"], strict=True):
            ids[i] = x
    return ids, len(long)


def encode_windows(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text with special tokens, a text longer than ``max_length`` as
    several consecutive windows (each with its special tokens), in order: what
    ``tokenizer(texts, truncation=True, max_length=max_length,
    return_overflowing_tokens=True)["input_ids"]`` gives, in Rust for a fast tokenizer."""
    encodings = _truncated_encodings(tokenizer, texts, max_length)
    if encodings is None:
        out = tokenizer(
            texts, truncation=True, max_length=max_length, return_overflowing_tokens=True
        )
        return out["input_ids"]
    ids = []
    for e in encodings:
        ids.append(e.ids)
        ids += [o.ids for o in e.overflowing]
    return ids
