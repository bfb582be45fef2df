"""Tokenizers: trained locally with ``tokenizers`` on the training texts, or loaded from a folder.

A trained tokenizer is returned as a ``transformers.PreTrainedTokenizerFast``, so it saves with
``save_pretrained`` and any transformers code (``AutoTokenizer.from_pretrained``) loads it.
Both kinds use BERT's special tokens, with ``[PAD]`` at id 0, and wrap every text as
``[CLS] text [SEP]``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

TokenizerAlgorithm = Literal["wordpiece", "bpe"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


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
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    if algorithm not in ("wordpiece", "bpe"):
        raise ValueError(f"`tokenizer` algorithm must be 'wordpiece' or 'bpe', got {algorithm!r}.")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"`vocab_size` must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}.")
    if not texts:
        raise ValueError("Cannot train a tokenizer on no texts: the training split is empty.")
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
    packaged model's by name (``all-MiniLM-L6-v2``: see :mod:`lifecycle.models.packaged`). No
    network is used.

    A tokenizer without a padding token gets its end-of-text token as padding (GPT-2 style).

    Raises:
        FileNotFoundError: the folder does not exist or holds no tokenizer files.
    """
    from transformers import AutoTokenizer

    from lifecycle.models.packaged import resolve_model_folder

    folder = resolve_model_folder(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Tokenizer folder {folder.resolve()} does not exist. Fix: set `tokenizer` to "
            "'wordpiece' or 'bpe' to train one, or to a folder written by save_pretrained "
            "(e.g. runs/<run>/version_N/tokenizer)."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"{folder} holds no loadable tokenizer ({err}). It needs tokenizer.json or a "
            "vocabulary file with tokenizer_config.json, as written by save_pretrained."
        ) from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"The tokenizer in {folder} has neither a pad nor an end-of-text token, so "
                "batches cannot be padded. Fix: add a pad token and save it again."
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_state(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The tokenizer's saved files as ``{file name: text}``: small, and safe in a
    ``weights_only`` checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text() for p in Path(tmp).iterdir() if p.is_file()}


def tokenizer_from_state(state: dict[str, str]) -> PreTrainedTokenizerBase:
    """Inverse of :func:`tokenizer_state`."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in state.items():
            (Path(tmp) / name).write_text(text)
        return load_tokenizer(tmp)
