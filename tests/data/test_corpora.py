"""Text readers: built-in tweets and fortunes, the user's CSV/JSONL/plain text, and bad input."""

import json

import pytest

from lifecycle.data.corpora import load_text_dataset, read_text_file
from lifecycle.data.datasets import DatasetNotFoundError, DataValidationError


def test_tweets_are_the_real_corpus_with_every_bad_byte_listed():
    table = load_text_dataset("tweets-sentiment")
    assert len(table) == 38158
    assert table.class_names == ["negative", "neutral", "positive"]
    assert sorted(set(table.labels)) == ["negative", "neutral", "positive"]
    assert table.labels.count("positive") == 6954
    replaced = [i for i in table.issues if i.reason == "bytes that are not valid UTF-8"]
    assert len(replaced) == 4934 and replaced[0].action.startswith("kept")
    assert "\ufffd" in table.texts[0]  # line 2 of the file holds mojibake


def test_binary_tweets_leave_out_neutral_and_say_so():
    table = load_text_dataset("tweets-sentiment-binary")
    assert len(table) == 16186 + 6954
    assert table.class_names == ["negative", "positive"] and "neutral" not in table.labels
    assert any("15018 neutral" in note for note in table.notes)


def test_fortunes_are_quotes_labelled_by_category():
    table = load_text_dataset("fortunes")
    assert len(table) > 15000 and len(table.class_names) >= 40
    assert {"computers", "politics", "science"} <= set(table.class_names)
    assert all("%" != t.strip() for t in table.texts[:200])
    assert table.sources[0].startswith(table.labels[0] + ":line ")


def test_missing_builtin_names_the_install_command(tmp_path, monkeypatch):
    import lifecycle.data.corpora as corpora

    monkeypatch.setattr(corpora, "FORTUNES_SYSTEM", [tmp_path / "nowhere"])
    monkeypatch.setenv("LIFECYCLE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError, match="apt-get install -y fortunes fortunes-min"):
        load_text_dataset("fortunes")


def test_csv_with_custom_columns_drops_and_lists_empty_records(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('id,body,stars\n1,"great, really",good\n2,   ,bad\n3,awful,\n4,fine,good\n')
    table = read_text_file(path, text_column="body", label_column="stars")
    assert table.texts == ["great, really", "fine"] and table.labels == ["good", "good"]
    assert [(i.source, i.reason) for i in table.issues] == [
        ("reviews.csv:line 3", "empty or whitespace-only text"),
        ("reviews.csv:line 4", "empty label"),
    ]


def test_missing_label_column_names_the_columns_and_the_fix(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,sentiment\nhello,pos\n")
    with pytest.raises(
        DataValidationError, match=r"label_column 'label' not found.*\['text', 'sentiment'\]"
    ):
        read_text_file(path)


def test_jsonl_and_its_errors(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"text": "a b", "label": 1})
        + "\n\n"
        + json.dumps({"text": "c", "label": 0})
        + "\n"
    )
    table = read_text_file(path)
    assert table.texts == ["a b", "c"] and table.labels == ["1", "0"]
    assert table.sources == ["t.jsonl:line 1", "t.jsonl:line 3"]
    path.write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(DataValidationError, match="t.jsonl:line 2 is not valid JSON"):
        read_text_file(path)
    path.write_text('{"body": "a"}\n')
    with pytest.raises(DataValidationError, match="no key 'text'.*\\['body'\\]"):
        read_text_file(path, label_column=None)


@pytest.mark.parametrize("policy", ["replace", "drop", "error"])
def test_undecodable_bytes_follow_the_stated_policy(tmp_path, policy):
    path = tmp_path / "t.csv"
    path.write_bytes(b"text,label\ncaf\xe9 ok,a\nplain,b\n")
    if policy == "error":
        with pytest.raises(
            DataValidationError, match="t.csv:line 2: bytes that are not valid UTF-8"
        ):
            read_text_file(path, encoding_errors=policy)
        return
    table = read_text_file(path, encoding_errors=policy)
    assert [i.source for i in table.issues] == ["t.csv:line 2"]
    if policy == "replace":
        assert table.texts == ["caf\ufffd ok", "plain"]
    else:
        assert table.texts == ["plain"] and table.issues[0].action == "dropped"


def test_plain_text_one_per_line_or_delimited(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first doc\n\nsecond doc\n")
    assert read_text_file(path).texts == ["first doc", "second doc"]
    assert read_text_file(path).labels is None
    path.write_text("one\ntwo\n%\nthree\n%\n")
    table = read_text_file(path, delimiter="%")
    assert table.texts == ["one\ntwo", "three"] and table.sources == [
        "c.txt:line 1",
        "c.txt:line 4",
    ]


def test_unknown_file_type_or_path(tmp_path):
    (tmp_path / "t.xml").write_text("<a/>")
    with pytest.raises(DataValidationError, match=".csv, .tsv, .jsonl, .txt"):
        read_text_file(tmp_path / "t.xml")
    with pytest.raises(DatasetNotFoundError, match="neither a built-in name"):
        load_text_dataset(str(tmp_path / "missing.csv"))
