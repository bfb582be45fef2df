"""Tokenizers trained locally on the training texts, saved and loaded as transformers tokenizers."""

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lifecycle.data.tokenization import (
    load_tokenizer,
    tokenizer_from_state,
    tokenizer_state,
    train_tokenizer,
)

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
    with pytest.raises(FileNotFoundError, match="does not exist.*wordpiece"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no loadable tokenizer"):
        load_tokenizer(tmp_path / "empty")
