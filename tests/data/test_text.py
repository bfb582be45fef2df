"""Text DataModules: leakage-free splits, the issue list, tokenizer state, padding, LM batches."""

import csv
from collections import Counter

import pytest
import torch

from lifecycle.data.datasets import DataValidationError
from lifecycle.data.text import CorpusDataModule, TextClassificationDataModule, text_key

WORDS = {
    "pos": ["great", "love", "happy", "superb", "wonderful"],
    "neg": ["awful", "hate", "sad", "terrible", "boring"],
}


def write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sentiment_rows(n=120):
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = WORDS[label]
        rows.append((f"item {i} is {words[i % 5]} and {words[(i + 2) % 5]}", label))
    return rows


def small(path, **kwargs):
    defaults = dict(dataset=str(path), vocab_size=200, min_frequency=1, batch_size=8)
    dm = TextClassificationDataModule(**{**defaults, **kwargs})
    dm.setup()
    return dm


def test_identical_texts_never_cross_splits_and_duplicates_are_listed(tmp_path):
    rows = sentiment_rows()
    rows += [(text.upper(), label) for text, label in rows[:30]]  # same text, other case
    rows += [("  " + rows[40][0] + "  ", rows[40][1])]  # same text, other spacing
    path = write_csv(tmp_path / "t.csv", rows)
    for dedupe in (True, False):
        dm = small(path, deduplicate=dedupe, val_fraction=0.2, test_fraction=0.2)
        keys = {name: {text_key(t) for t in split.texts} for name, split in dm.texts.items()}
        assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"]
        assert not keys["val"] & keys["test"]
        total = sum(len(s) for s in dm.texts.values())
        dropped = [i for i in dm.issues if i.action == "dropped"]
        assert total + len(dropped) == len(rows)
        assert len(dropped) == (31 if dedupe else 0)
        assert all(i.reason == "duplicate text" for i in dropped)


def test_duplicates_keep_the_first_record_of_the_most_common_label(tmp_path):
    rows = sentiment_rows(40) + [
        ("same words here", "pos"), ("same words here", "neg"), ("same words here", "neg"),
        ("tied words", "pos"), ("tied words", "neg"),
    ]  # fmt: skip
    dm = small(write_csv(tmp_path / "t.csv", rows), val_fraction=0.1, test_fraction=0.1)
    kept = {t: label for s in dm.texts.values() for t, label in zip(s.texts, s.labels, strict=True)}
    # the majority label wins; a tie keeps the group's first record (nothing of it is lost)
    assert kept["same words here"] == "neg" and kept["tied words"] == "pos"
    issues = {i.source.rsplit(":", 1)[-1]: (i.reason, i.detail) for i in dm.issues}
    assert issues == {
        "line 42": ("duplicate text, outvoted label",
                    "kept t.csv:line 43; label 'pos' outvoted by 'neg'"),
        "line 44": ("duplicate text", "kept t.csv:line 43"),
        "line 46": ("duplicate text, tied label",
                    "kept t.csv:line 45; label 'neg' tied with the kept 'pos'"),
    }  # fmt: skip


def test_splits_are_seeded_and_stratified(tmp_path):
    path = write_csv(tmp_path / "t.csv", sentiment_rows(200))
    a, b = small(path, seed=1), small(path, seed=1)
    assert a.texts["test"].texts == b.texts["test"].texts
    assert small(path, seed=2).texts["test"].texts != a.texts["test"].texts
    assert Counter(a.texts["test"].labels) == {"neg": 20, "pos": 20}
    assert a.class_names == ["neg", "pos"] and a.num_classes == 2


def test_batches_are_padded_to_the_longest_text(tmp_path):
    rows = [("short", "a"), ("a much longer text with many more words in it", "b")] * 30
    rows = [(f"{t} {i}", label) for i, (t, label) in enumerate(rows)]
    dm = small(write_csv(tmp_path / "t.csv", rows), max_length=8, batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "label", "index"}
    assert batch["input_ids"].shape[1] <= 8
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == lengths.max()
    assert (batch["input_ids"][batch["attention_mask"] == 0] == dm.tokenizer.pad_token_id).all()
    assert dm.truncated["train"] > 0
    long_row = batch["input_ids"][lengths.argmax()]
    assert long_row[-1] == dm.tokenizer.sep_token_id  # cut texts still end with [SEP]


@pytest.mark.parametrize("algorithm", ["bpe", "wordpiece"])
def test_tokenizer_is_trained_on_the_training_split_only(tmp_path, algorithm):
    import random

    rng = random.Random(0)
    rows = [
        (f"{text} {''.join(rng.choices('abcdefghijklmnopqrstuvwxyz', k=8))}", label)
        for text, label in sentiment_rows(100)
    ]  # each text ends in its own random word
    path = write_csv(tmp_path / "t.csv", rows)
    dm = small(path, tokenizer=algorithm, vocab_size=2000, test_fraction=0.3)

    def pieces(word):
        return len(dm.tokenizer.tokenize(f"a {word}")) - 1

    train_words = [t.split()[-1] for t in dm.texts["train"].texts]
    test_words = [t.split()[-1] for t in dm.texts["test"].texts]
    assert all(pieces(w) == 1 for w in train_words)  # seen in training: one token each
    assert len(test_words) == 30 and all(pieces(w) > 1 for w in test_words)  # never seen: split


def test_unseen_labels_in_test_file_error_or_drop(tmp_path):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(60))
    test = write_csv(
        tmp_path / "test.csv",
        [
            ("great and happy", "pos"),
            ("meh", "neutral"),
            ("so so", "neutral"),
            (sentiment_rows(60)[5][0], "pos"),
        ],
    )
    with pytest.raises(
        DataValidationError,
        match=r"labels the training split lacks: 'neutral' \(2 records, first test.csv:line 3\)",
    ):
        small(train, test_dataset=str(test))
    dm = small(train, test_dataset=str(test), unseen_labels="drop")
    assert dm.texts["test"].texts == ["great and happy", sentiment_rows(60)[5][0]]
    reasons = Counter((i.reason, i.detail) for i in dm.issues)
    assert reasons[("label unseen in the training split", "neutral")] == 2
    assert reasons[("identical text in test_dataset", str(test))] == 1  # left out of training
    assert sentiment_rows(60)[5][0] not in dm.texts["train"].texts + dm.texts["val"].texts


def test_classes_select_and_order_labels(tmp_path):
    rows = sentiment_rows(60) + [(f"other thing {i}", "other") for i in range(10)]
    dm = small(write_csv(tmp_path / "t.csv", rows), classes=["pos", "neg"])
    assert dm.class_names == ["pos", "neg"]
    assert Counter(i.reason for i in dm.issues)["label not in `classes`"] == 10
    batch = next(iter(dm.test_dataloader()))
    first = dm.texts["test"].labels[0]
    assert batch["label"][0].item() == ["pos", "neg"].index(first)


def test_empty_texts_and_missing_label_column_are_reported(tmp_path):
    rows = sentiment_rows(40) + [("   ", "pos"), ("", "neg")]
    dm = small(write_csv(tmp_path / "t.csv", rows))
    assert Counter(i.reason for i in dm.issues)["empty or whitespace-only text"] == 2
    with pytest.raises(DataValidationError, match="label_column 'sentiment' not found"):
        small(tmp_path / "t.csv", label_column="sentiment")


def test_issues_and_tokenizer_are_written_to_the_run_folder(tmp_path):
    import lightning as L

    rows = sentiment_rows(40) + [("", "pos")] + sentiment_rows(3)
    dm = TextClassificationDataModule(str(write_csv(tmp_path / "t.csv", rows)), vocab_size=200)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=L.pytorch.loggers.CSVLogger(tmp_path))
    dm.trainer = trainer
    dm.setup("fit")
    run = tmp_path / "lightning_logs" / "version_0"
    with open(run / "data_issues.csv") as f:
        listed = list(csv.DictReader(f))
    assert len(listed) == 4 and {r["reason"] for r in listed} == {
        "empty or whitespace-only text",
        "duplicate text",
    }
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(run / "tokenizer"))
    assert saved.get_vocab() == dm.tokenizer.get_vocab()


def test_checkpoint_state_restores_the_tokenizer_and_re_encodes(tmp_path):
    path = write_csv(tmp_path / "t.csv", sentiment_rows(80))
    dm = small(path)
    state = dm.state_dict()
    other = small(path, tokenizer="wordpiece")
    before = next(iter(other.test_dataloader()))["input_ids"]
    other.load_state_dict(state)
    after = next(iter(other.test_dataloader()))["input_ids"]
    assert other.tokenizer.get_vocab() == dm.tokenizer.get_vocab()
    assert torch.equal(after, next(iter(dm.test_dataloader()))["input_ids"])
    assert before.shape != after.shape or not torch.equal(before, after)  # it did change


def test_predict_path_reads_new_texts_with_their_lines(tmp_path):
    path = write_csv(tmp_path / "t.csv", sentiment_rows(60))
    new = tmp_path / "new.txt"
    new.write_text("what a wonderful day\n\nterrible service\n")
    dm = small(path, predict_path=str(new))
    assert dm.predict_sources == ["new.txt:line 1", "new.txt:line 3"]
    batch = next(iter(dm.predict_dataloader()))
    assert batch["input_ids"].shape[0] == 2 and "label" not in batch


def test_a_single_label_is_an_error_naming_the_columns_to_check(tmp_path):
    rows = [(f"text number {i}", "same") for i in range(30)]
    with pytest.raises(DataValidationError, match="one label only \\('same'\\).*label_column"):
        small(write_csv(tmp_path / "t.csv", rows))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unseen_labels"):
        TextClassificationDataModule(unseen_labels="keep")
    with pytest.raises(ValueError, match="batch_size"):
        TextClassificationDataModule(batch_size=0)


def test_corpus_windows_long_documents_and_masks_like_bert(tmp_path):
    docs = [f"doc{i} " + " ".join(f"word{j % 50}" for j in range(i, i + 30)) for i in range(120)]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(docs + docs[:5]))
    dm = CorpusDataModule(str(path), vocab_size=300, min_frequency=1, max_length=16, batch_size=8)
    dm.setup()
    assert sum(len(s) for s in dm.texts.values()) == 120
    assert Counter(i.reason for i in dm.issues) == {"duplicate text": 5}
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape[1] <= 16
    # no document text is lost: its windows together hold every token
    ids = dm._datasets["train"].ids
    n_tokens = sum(
        len(dm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in dm.texts["train"].texts
    )
    assert sum(len(r) - 2 for r in ids) == n_tokens
    selected = batch["labels"] != -100
    assert 0.05 < selected.float().mean() < 0.3
    masked = batch["input_ids"][selected] == dm.tokenizer.mask_token_id
    assert masked.float().mean() > 0.5  # 80% of the selected tokens become [MASK]
    first = next(iter(dm.val_dataloader()))
    assert torch.equal(first["labels"], next(iter(dm.val_dataloader()))["labels"])  # fixed masks


def test_corpus_for_causal_lm_predicts_every_real_token(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(f"line number {i} of the corpus" for i in range(60)))
    dm = CorpusDataModule(str(path), vocab_size=200, min_frequency=1, mlm=False, batch_size=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    real = batch["attention_mask"] == 1
    assert torch.equal(batch["labels"][real], batch["input_ids"][real])
    assert (batch["labels"][~real] == -100).all()


def test_normalize_text_standardizes_unicode_and_spacing_and_counts_it(tmp_path):
    rows = sentiment_rows(40)
    rows[0] = ("ＦＵＬＬ width  and\ttabs ﬁne", rows[0][1])
    path = write_csv(tmp_path / "t.csv", rows)
    dm = TextClassificationDataModule(
        str(path), normalize_text=True, val_fraction=0.2, test_fraction=0.2
    )
    dm.setup()
    texts = [t for table in dm.texts.values() for t in table.texts]
    assert "FULL width and tabs fine" in texts
    assert any("1 of 40 texts standardized" in note for note in dm.notes)
    raw = TextClassificationDataModule(str(path), val_fraction=0.2, test_fraction=0.2)
    raw.setup()
    assert rows[0][0] in [t for table in raw.texts.values() for t in table.texts]


def test_unlabeled_rest_keeps_the_subset_labeled_and_hides_the_other_labels(tmp_path):
    path = write_csv(tmp_path / "t.csv", sentiment_rows(200))
    plain = small(path, train_subset=20)
    dm = small(path, train_subset=20, unlabeled_rest=True)
    train = dm.texts["train"]
    assert train.texts[:20] == plain.texts["train"].texts  # the same labeled subset
    assert dm.unlabeled_count == len(train) - 20 > 100
    assert train.labels[20:] == [None] * dm.unlabeled_count
    labels = dm.split_dataset("train").labels
    assert (labels[20:] == -1).all() and (labels[:20] >= 0).all()
    assert dm.texts["test"].texts == plain.texts["test"].texts  # held-out splits unchanged
    with pytest.raises(ValueError, match="`train_subset` is not set"):
        TextClassificationDataModule(str(path), unlabeled_rest=True)


def test_a_label_outside_the_classes_is_an_error_naming_it_and_its_line(tmp_path):
    dm = small(write_csv(tmp_path / "t.csv", sentiment_rows(60)))
    dm.class_names, dm._datasets = ["neg"], {}  # as if the dataset defined its classes alone
    val = dm.texts["val"]
    first = next(s for s, y in zip(val.sources, val.labels, strict=True) if y == "pos")
    with pytest.raises(DataValidationError, match=f"the first is 'pos' at {first}"):
        dm.split_dataset("val")  # it was label -1 without a word
