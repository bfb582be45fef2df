"""Tokenizers trained locally on the training texts, saved and loaded as transformers tokenizers."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lifecycle.data.tokenization import (
    encode,
    load_tokenizer,
    tokenizer_from_state,
    tokenizer_state,
    train_tokenizer,
    write_tokenizer_files,
)
from lifecycle.errors import ConfigError, DataError, MissingFileError

TEXTS = [f"the quick brown fox number {i} jumps over the lazy dog" for i in range(200)] + [
    "Tokenizers split unknown words into pieces"
] * 5


@pytest.mark.parametrize("algorithm", ["wordpiece", "bpe"])
def test_trained_tokenizer_has_bert_special_tokens_and_round_trips(tmp_path, algorithm):
    tok = train_tokenizer(TEXTS, algorithm, vocab_size=300, min_frequency=1)
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.pad_token_id == 0 and tok.mask_token == "[MASK]" and len(tok) <= 300
    ids = tok("The quick brown fox")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids, skip_special_tokens=True).strip() == "the quick brown fox"  # lowercased
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert again("The quick brown fox")["input_ids"] == ids
    assert load_tokenizer(tmp_path / "tok")("jumps")["input_ids"] == tok("jumps")["input_ids"]


def test_vocabulary_comes_from_the_given_texts_only():
    tok = train_tokenizer(TEXTS, "wordpiece", vocab_size=400, min_frequency=1)
    assert "fox" in tok.get_vocab()
    assert "zebra" not in tok.get_vocab()  # never seen: split into pieces or [UNK]
    assert tok.tokenize("zebra") != ["zebra"]


def test_bpe_never_produces_unknown_tokens():
    tok = train_tokenizer(TEXTS, "bpe", vocab_size=400, min_frequency=1)
    ids = tok("ünïcödé ✓ zebra")["input_ids"]
    assert tok.unk_token_id not in ids


def test_bpe_training_is_reproducible():
    texts = [f"{w}{i % 7} and {w}ing {i % 5}" for i, w in enumerate(["walk", "talk", "stalk"] * 40)]
    first = train_tokenizer(texts, "bpe", vocab_size=320, min_frequency=1)
    again = train_tokenizer(texts, "bpe", vocab_size=320, min_frequency=1)
    assert first.get_vocab() == again.get_vocab()


def test_state_round_trip_is_exact():
    tok = train_tokenizer(TEXTS, "wordpiece", vocab_size=300, min_frequency=1, lowercase=False)
    state = tokenizer_state(tok)
    assert "tokenizer.json" in state and all(isinstance(v, str) for v in state.values())
    again = tokenizer_from_state(state)
    assert again.get_vocab() == tok.get_vocab()
    assert again("Tokenizers Quick")["input_ids"] == tok("Tokenizers Quick")["input_ids"]


def test_bad_settings_and_missing_folders_are_explained(tmp_path):
    with pytest.raises(ValueError, match="'wordpiece' or 'bpe'"):
        train_tokenizer(TEXTS, "unigram")
    with pytest.raises(ValueError, match="training split is empty"):
        train_tokenizer([], "wordpiece")
    with pytest.raises(ConfigError, match="`vocab_size` must exceed 5"):
        train_tokenizer(TEXTS, "bpe", vocab_size=5)
    with pytest.raises(MissingFileError, match="does not exist.*wordpiece"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no tokenizer here")
    with pytest.raises(MissingFileError, match=r"holds no tokenizer files.*notes\.md"):
        load_tokenizer(tmp_path / "empty")


def test_a_broken_tokenizer_file_is_a_data_error_naming_the_file(tmp_path):
    folder = tmp_path / "tok"
    train_tokenizer(TEXTS, "bpe", vocab_size=300, min_frequency=1).save_pretrained(folder)
    good = (folder / "tokenizer.json").read_text()
    (folder / "tokenizer.json").write_text(good[: len(good) // 2])  # cut short
    with pytest.raises(DataError, match=r"tok/tokenizer\.json is not valid JSON") as err:
        load_tokenizer(folder)
    assert not isinstance(err.value, FileNotFoundError)  # the file is there, but broken
    assert "JSONDecodeError" in str(err.value)  # what transformers said is kept
    # valid JSON that is no tokenizer: tokenizers' own error, named and kept too
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "nope"}}')
    with pytest.raises(DataError, match=r"tok/tokenizer\.json does not describe a tokenizer"):
        load_tokenizer(folder)


def word_tokenizer(template: str, **special_tokens) -> PreTrainedTokenizerFast:
    """A one-token-per-word tokenizer whose post-processor wraps texts as ``template``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "[CLS]", "</s>", *"abcdefgh"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    specials = [(t, vocab[t]) for t in ("[CLS]", "</s>") if t in template]
    backend.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", **special_tokens
    )


@pytest.mark.parametrize(
    "template, special_tokens, cut",
    [
        # T5-style: texts end with </s>, and there is no sep token
        ("[CLS] $A </s>", {"cls_token": "[CLS]", "eos_token": "</s>"}, "[CLS] a b c </s>"),
        # a sep token the post-processor never adds: nothing closes a text
        ("$A", {"sep_token": "</s>"}, "a b c d e"),
    ],
)
def test_encode_keeps_each_truncated_text_its_own_closing_tokens(template, special_tokens, cut):
    tok = word_tokenizer(template, **special_tokens)
    texts = ["h", "a b c d e f g", "b c", "a b c d e f g h"]
    ids, truncated = encode(tok, texts, max_length=5)
    assert truncated == 2
    assert tok.convert_ids_to_tokens(ids[1]) == cut.split()
    assert ids[3] == ids[1]  # cut at the same place, closed the same way
    assert ids[0] == tok("h")["input_ids"] and ids[2] == tok("b c")["input_ids"]  # unchanged


def test_encode_closes_truncated_texts_with_sep_for_a_trained_tokenizer():
    tok = train_tokenizer(TEXTS, "wordpiece", vocab_size=300, min_frequency=1)
    texts = ["fox", TEXTS[0], "the lazy dog"]
    ids, truncated = encode(tok, texts, max_length=6)
    assert truncated == 1 and len(ids[1]) == 6
    assert ids[1] == [tok.cls_token_id, *tok(TEXTS[0])["input_ids"][1:5], tok.sep_token_id]
    assert ids[0] == tok("fox")["input_ids"] and ids[2] == tok("the lazy dog")["input_ids"]


def test_state_keeps_binary_and_crlf_files_byte_for_byte(tmp_path, monkeypatch):
    import random

    tok = train_tokenizer(TEXTS, "bpe", vocab_size=300, min_frequency=1)
    model = bytes([0x80, 0xFF, 0x00]) + random.Random(0).randbytes(2000)  # not UTF-8
    real_save = tok.save_pretrained

    def save_like_sentencepiece(folder, **kwargs):  # a SentencePiece model beside the JSON
        out = real_save(folder, **kwargs)
        (Path(folder) / "spiece.model").write_bytes(model)
        (Path(folder) / "notes.txt").write_bytes(b"line one\r\nline two\r\n")
        return out

    monkeypatch.setattr(tok, "save_pretrained", save_like_sentencepiece)
    state = tokenizer_state(tok)
    assert state["spiece.model"] == model and isinstance(state["tokenizer.json"], str)
    torch.save({"tokenizer": state}, tmp_path / "checkpoint.pt")
    loaded = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["tokenizer"]
    write_tokenizer_files(loaded, tmp_path)
    assert (tmp_path / "spiece.model").read_bytes() == model
    assert (tmp_path / "notes.txt").read_bytes() == b"line one\r\nline two\r\n"
    again = tokenizer_from_state(loaded)
    assert again.get_vocab() == tok.get_vocab()
