"""Text backbones: shapes, padding that changes nothing, and learning a real signal."""

import pytest
import torch
from torch.utils.data import DataLoader

from lifecycle.models import RNNEncoder, TextCNN, TransformerEncoder
from lifecycle.stages import ClassificationModule
from tests.conftest import quiet_trainer

SMALL = {
    "lstm": lambda: RNNEncoder(vocab_size=50, embedding_dim=16, hidden_size=16, dropout=0.0),
    "gru-last": lambda: RNNEncoder(
        vocab_size=50, embedding_dim=16, hidden_size=16, cell="gru", pooling="last", dropout=0.0
    ),
    "lstm-mean-uni": lambda: RNNEncoder(
        vocab_size=50, embedding_dim=16, hidden_size=16, pooling="mean", bidirectional=False
    ),
    "cnn": lambda: TextCNN(vocab_size=50, embedding_dim=16, num_filters=8, dropout=0.0),
    "transformer": lambda: TransformerEncoder(
        vocab_size=50,
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        intermediate_size=32,
        max_length=32,
    ),
    "transformer-mean": lambda: TransformerEncoder(
        vocab_size=50,
        hidden_size=16,
        num_heads=2,
        intermediate_size=32,
        max_length=32,
        pooling="mean",
    ),
}


@pytest.mark.parametrize("name", SMALL)
def test_features_ignore_padding(name):
    torch.manual_seed(0)
    backbone = SMALL[name]().eval()
    ids = torch.randint(1, 50, (3, 12))
    mask = torch.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = 0, 0
    out = backbone(ids, mask)
    assert out.shape == (3, backbone.out_features)
    alone = backbone(ids[1:2, :5], mask[1:2, :5])
    assert torch.allclose(out[1], alone[0], atol=1e-5)
    assert backbone.input_keys == ("input_ids", "attention_mask")


def keyword_batches(n=256, length=10, seed=0):
    """Class 1 texts contain token 7 somewhere; class 0 texts never do."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 50, (n, length), generator=g)
    labels = torch.arange(n) % 2
    where = torch.randint(1, length - 1, (n,), generator=g)
    ids[labels == 1, where[labels == 1]] = 7
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids[labels == 1, 1] = 7  # inside every text, whatever its length
    ids = ids * mask
    batches = [
        {
            "input_ids": ids[i : i + 32],
            "attention_mask": mask[i : i + 32],
            "label": labels[i : i + 32],
        }
        for i in range(0, n, 32)
    ]
    return DataLoader(batches, batch_size=None)  # each item is already a batch


@pytest.mark.parametrize("name", ["lstm", "cnn", "transformer"])
def test_each_backbone_learns_a_keyword_through_classification_module(name, tmp_path):
    torch.manual_seed(0)
    model = ClassificationModule(
        SMALL[name](), num_classes=2, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3)
    )
    train, test = keyword_batches(seed=0), keyword_batches(seed=1)
    trainer = quiet_trainer(tmp_path, max_epochs=8)
    trainer.fit(model, train_dataloaders=train, val_dataloaders=test)
    accuracy = trainer.validate(model, test, verbose=False)[0]["val/accuracy"]
    assert accuracy > 0.95, accuracy


def test_tokenizer_larger_than_the_embedding_is_a_clear_error(tmp_path):
    import csv

    from lifecycle.data.text import TextClassificationDataModule

    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(
            [("text", "label")] + [(f"text {i} word{i}", i % 2) for i in range(40)]
        )
    data = TextClassificationDataModule(str(path), vocab_size=500, min_frequency=1)
    model = ClassificationModule(RNNEncoder(vocab_size=20), num_classes=2)
    with pytest.raises(
        ValueError, match=r"tokenizer has \d+ tokens but the backbone's embedding holds 20"
    ):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, datamodule=data)
    model = ClassificationModule(TransformerEncoder(vocab_size=500, max_length=16), num_classes=2)
    with pytest.raises(ValueError, match="texts reach 64 tokens but the backbone has 16 positions"):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, datamodule=data)


def test_bad_backbone_settings():
    with pytest.raises(ValueError, match="'lstm' or 'gru'"):
        RNNEncoder(cell="rnn")
    with pytest.raises(ValueError, match="multiple of `num_heads`"):
        TransformerEncoder(hidden_size=30, num_heads=4)
    with pytest.raises(
        ValueError, match=r"`model_type` 'nonsense' is not a transformers model type"
    ):
        TransformerEncoder(model_type="nonsense")
    with pytest.raises(ValueError, match="'cls', 'mean' or 'last'"):
        TransformerEncoder(pooling="max")
