"""The private transformers names of ``lifecycle.compat.plain_fast_tokenizer_backend`` still
exist and still do what the fast encode path relies on (checked on transformers 5.23.0): the
Rust tokenizer behind a fast tokenizer encodes exactly what the tokenizer's own call gives."""

from tokenizers import Tokenizer

from lifecycle.compat import plain_fast_tokenizer_backend
from lifecycle.data.tokenization import encode, encode_windows, load_tokenizer

TEXTS = ["a short one", "ﬁve ligatures and ｆｕｌｌ-width", "[MASK] typed in the text", "",
         " ".join(["many words"] * 40), "絵文字 🎉 and Japanese"]  # fmt: skip


def test_the_backend_of_a_fast_tokenizer_encodes_what_its_call_gives():
    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    assert isinstance(plain_fast_tokenizer_backend(tokenizer), Tokenizer)
    for max_length in (9, 64):
        expected = tokenizer(TEXTS, truncation=True, max_length=max_length)["input_ids"]
        ids, truncated = encode(tokenizer, TEXTS, max_length)
        assert ids == expected
        assert truncated == sum(
            len(x) > max_length
            for x in tokenizer(TEXTS, truncation=True, max_length=512)["input_ids"]
        )
        windows = tokenizer(TEXTS, truncation=True, max_length=max_length,
                            return_overflowing_tokens=True)["input_ids"]  # fmt: skip
        assert encode_windows(tokenizer, TEXTS, max_length) == windows
    # the backend's own settings are given back
    backend = plain_fast_tokenizer_backend(tokenizer)
    backend.enable_padding(length=20)
    backend.no_truncation()
    encode(tokenizer, TEXTS, 9)
    assert backend.padding["length"] == 20 and backend.truncation is None


def test_anything_else_has_no_plain_backend():
    class Wrapped:
        _tokenizer = object()

    assert plain_fast_tokenizer_backend(Wrapped()) is None
    assert plain_fast_tokenizer_backend(object()) is None
