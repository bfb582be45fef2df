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


def test_cls_and_last_pooling_find_the_real_tokens_whichever_side_is_padded():
    from lifecycle.models.text import pool_tokens

    hidden = torch.randn(2, 5, 3)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])  # a left-padding tokenizer's
    assert torch.equal(pool_tokens(hidden, right, "last"), hidden[[0, 1], [2, 4]])
    assert torch.equal(pool_tokens(hidden, left, "last"), hidden[[0, 1], [4, 4]])
    assert torch.equal(pool_tokens(hidden, right, "cls"), hidden[:, 0])
    assert torch.equal(pool_tokens(hidden, left, "cls"), hidden[[0, 1], [2, 1]])
    mean = pool_tokens(hidden, left, "mean")
    assert torch.allclose(mean[0], hidden[0, 2:].mean(0))


@pytest.mark.parametrize(
    "model_type, padding_idx", [("roberta", 1), ("xlm-roberta", 0), ("bert", 0)]
)
def test_a_roberta_style_encoder_takes_texts_of_its_full_max_length(model_type, padding_idx):
    # RoBERTa numbers positions from padding_idx + 1: max_length tokens need that many more rows
    encoder = TransformerEncoder(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                                 intermediate_size=32, max_length=12, model_type=model_type,
                                 padding_idx=padding_idx)  # fmt: skip
    ids = torch.randint(3, 50, (2, 12))
    features = encoder(ids, torch.ones_like(ids))
    assert features.shape == (2, 16) and torch.isfinite(features).all()
    from lifecycle.models.text import transformer_config, usable_positions

    config = transformer_config(model_type, max_length=12, padding_idx=padding_idx)
    extra = padding_idx + 1 if model_type != "bert" else 0
    assert config.max_position_embeddings == 12 + extra
    assert usable_positions(config) == 12
