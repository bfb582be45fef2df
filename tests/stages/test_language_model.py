"""Masked and causal LM pretraining: perplexity falls, the output loads with plain transformers
and as a classifier's backbone, and bad input is refused clearly."""

import json
from functools import partial

import lightning as L
import pytest
import torch

from lifecycle.artifacts import MANIFEST, load_backbone
from lifecycle.data import CorpusDataModule, TextClassificationDataModule
from lifecycle.errors import ConfigError
from lifecycle.stages import (
    CausalLMPretrainingModule,
    ClassificationModule,
    MaskedLMPretrainingModule,
)
from tests.conftest import quiet_trainer

SIZES = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_length=32)


@pytest.fixture
def corpus(tmp_path):
    """600 short sentences with a learnable structure, one per line."""
    import random

    rng = random.Random(0)
    animals, verbs, places = (
        ["cat", "dog", "fox", "owl"],
        ["sleeps", "runs", "hides"],
        ["barn", "park", "den"],
    )
    lines = [
        f"the {rng.choice(animals)} {rng.choice(verbs)} in the {rng.choice(places)} number {i}"
        for i in range(600)
    ]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def corpus_data(path, mlm=True, **kwargs):
    return CorpusDataModule(
        str(path), vocab_size=kwargs.pop("vocab_size", 200), max_length=32, batch_size=32,
        mlm=mlm, val_fraction=0.1, test_fraction=0.1, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize(
    "module, mlm", [(MaskedLMPretrainingModule, True), (CausalLMPretrainingModule, False)]
)
def test_pretraining_lowers_held_out_perplexity_and_saves_what_transformers_loads(
    module, mlm, corpus, tmp_path
):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    L.seed_everything(0)
    data = corpus_data(corpus, mlm)
    model = module(**SIZES, save_to=str(tmp_path / "pre"))
    trainer = quiet_trainer(tmp_path, max_epochs=6)
    before = trainer.validate(model, datamodule=data, verbose=False)[0]["val/perplexity"]
    assert before > 0.5 * len(data.tokenizer)  # an untrained model guesses among the vocabulary
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]["val/perplexity"]
    assert after < before / 5, (before, after)
    folder = tmp_path / "pre"
    auto = AutoModelForMaskedLM if mlm else AutoModelForCausalLM
    reloaded = auto.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.get_vocab() == data.tokenizer.get_vocab()
    batch = next(iter(data.val_dataloader()))
    model.eval()
    with torch.no_grad():
        ours = model(batch["input_ids"], batch["attention_mask"]).logits
        theirs = reloaded(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["kind"] == "text" and manifest["tokenizer"] == "."
    assert manifest["produced_by"]["objective"] == ("masked-lm" if mlm else "causal-lm")
    # the encoder without its LM head, as a classifier's backbone, holds the trained weights
    backbone = load_backbone(str(folder))
    base = model.model.base_model.state_dict()
    assert all(
        torch.equal(v, base[k.removeprefix("encoder.")]) for k, v in backbone.state_dict().items()
    )


def test_a_classifier_fine_tunes_from_the_pretrained_encoder_with_its_tokenizer(corpus, tmp_path):
    L.seed_everything(0)
    model = MaskedLMPretrainingModule(**SIZES, save_to=str(tmp_path / "pre"))
    quiet_trainer(tmp_path, max_steps=3, limit_val_batches=0).fit(
        model, datamodule=corpus_data(corpus)
    )
    labelled = tmp_path / "labelled.csv"
    rows = [f"{t.strip()},{int('cat' in t)}" for t in corpus.read_text().splitlines()]
    labelled.write_text("text,label\n" + "\n".join(rows) + "\n")

    def classifier_data(tokenizer):
        return TextClassificationDataModule(
            str(labelled), tokenizer=tokenizer, max_length=32, batch_size=32
        )

    classifier = ClassificationModule(
        load_backbone(str(tmp_path / "pre")), num_classes=2,
        optimizer=partial(torch.optim.AdamW, lr=3e-3),
    )  # fmt: skip
    # the data's own freshly trained tokenizer gives other ids: refused, with the fix
    with pytest.raises(
        ValueError, match=r"pretrained with the tokenizer.*data.init_args.tokenizer: .*pre"
    ):
        quiet_trainer(tmp_path, fast_dev_run=True).fit(
            classifier, datamodule=classifier_data("bpe")
        )
    trainer = quiet_trainer(tmp_path, max_epochs=8)
    trainer.fit(classifier, datamodule=classifier_data(str(tmp_path / "pre")))
    # a quarter of the texts have "cat": 0.75 for always guessing "no"
    assert trainer.callback_metrics["val/accuracy"] > 0.9


def test_a_corpus_without_text_is_an_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    with pytest.raises(ValueError, match=r"empty.txt holds no text.*one document per line"):
        corpus_data(empty).setup("fit")


def test_a_vocabulary_smaller_than_the_special_tokens_is_an_error(corpus):
    with pytest.raises(ValueError, match=r"`vocab_size` must exceed 5"):
        corpus_data(corpus, vocab_size=4).setup("fit")


def test_objective_and_batches_must_agree(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"causal LM batches.*mlm: true"):
        quiet_trainer(tmp_path, fast_dev_run=True).fit(
            MaskedLMPretrainingModule(**SIZES), datamodule=corpus_data(corpus, mlm=False)
        )


def test_a_model_shorter_than_the_data_rows_is_an_error(corpus, tmp_path):
    model = MaskedLMPretrainingModule(**{**SIZES, "max_length": 16})
    with pytest.raises(ValueError, match=r"32 tokens but the model has 16 positions"):
        quiet_trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=corpus_data(corpus))


def test_a_checkpoint_reloads_the_network_sized_to_the_trained_tokenizer(corpus, tmp_path):
    data = corpus_data(corpus)
    model = MaskedLMPretrainingModule(**SIZES)
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(tmp_path / "lm.ckpt")
    # our own file: its hyperparameters hold the optimizer class, which weights_only refuses
    reloaded = MaskedLMPretrainingModule.load_from_checkpoint(
        tmp_path / "lm.ckpt", weights_only=False
    )
    assert reloaded.vocab_size == len(data.tokenizer) != data.vocab_size
    assert all(
        torch.equal(v, model.model.state_dict()[k]) for k, v in reloaded.model.state_dict().items()
    )


def test_a_tokenizer_the_model_cannot_embed_is_a_config_error_naming_both_sizes(corpus, tmp_path):
    data = corpus_data(corpus, tokenizer="wordpiece", vocab_size=120)
    with pytest.raises(ConfigError) as err:
        quiet_trainer(tmp_path, fast_dev_run=True).fit(
            MaskedLMPretrainingModule(**SIZES, vocab_size=40), datamodule=data
        )
    needed = len(data.tokenizer)
    assert f"tokenizer has {needed} tokens but the model's embedding holds 40" in str(err.value)
    assert "leave `model.init_args.vocab_size` unset" in str(err.value)


def test_a_checkpoint_built_for_another_tokenizer_is_refused_before_its_weights_load(
    corpus, tmp_path
):
    small = corpus_data(corpus, tokenizer="wordpiece", vocab_size=60)
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(MaskedLMPretrainingModule(**SIZES), datamodule=small)
    trainer.save_checkpoint(tmp_path / "small.ckpt")
    big = corpus_data(corpus, tokenizer="wordpiece", vocab_size=120)
    with pytest.raises(ConfigError) as err:  # was a RuntimeError: size mismatch for ...weight
        quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(
            MaskedLMPretrainingModule(**SIZES),
            datamodule=big,
            ckpt_path=tmp_path / "small.ckpt",
            weights_only=False,  # our own file; its hyperparameters name the optimizer class
        )
    message = str(err.value)
    assert f"embeds {len(small.tokenizer)} tokens (its tokenizer's)" in message
    assert f"this model was built for {len(big.tokenizer)}" in message
    assert "data.init_args.tokenizer: " in message


def test_a_roberta_language_model_takes_rows_of_its_full_max_length():
    # RoBERTa numbers positions from padding_idx + 1: 32 tokens need 34 position embeddings
    model = MaskedLMPretrainingModule(**{**SIZES, "model_type": "roberta"}, vocab_size=60)
    ids = torch.randint(3, 60, (2, SIZES["max_length"]))
    out = model(ids, torch.ones_like(ids), labels=ids)
    assert out.logits.shape == (2, 32, 60) and torch.isfinite(out.loss)
    assert model.backbone(ids, torch.ones_like(ids)).shape == (2, SIZES["hidden_size"])


@pytest.mark.parametrize("mlm", [True, False])
def test_batches_mask_exactly_their_tokens_with_a_left_padding_tokenizer(mlm, corpus, tmp_path):
    from lifecycle.data.tokenization import train_tokenizer

    tokenizer = train_tokenizer(corpus.read_text().splitlines(), "bpe", 300, min_frequency=1)
    tokenizer.save_pretrained(tmp_path / "left")
    config = tmp_path / "left" / "tokenizer_config.json"
    # as a tokenizer saved for batched generation often is
    config.write_text(json.dumps({**json.loads(config.read_text()), "padding_side": "left"}))
    data = corpus_data(corpus, mlm, tokenizer=str(tmp_path / "left"))
    data.setup("fit")
    assert data.tokenizer.padding_side == "left"
    pad = data.tokenizer.pad_token_id
    for batch in (next(iter(data.train_dataloader())), next(iter(data.val_dataloader()))):
        ids, mask, labels = batch["input_ids"], batch["attention_mask"].bool(), batch["labels"]
        assert len(set(mask.sum(1).tolist())) > 1  # rows of several lengths: some are padded
        # the ids before masking: a masked-LM label holds the original id where it is set
        original = torch.where(labels != -100, labels, ids) if mlm else ids
        assert torch.equal(mask, original != pad)  # 1 exactly on the tokens, 0 on the padding
        assert (original[:, 0] == data.tokenizer.cls_token_id).all()  # each row starts with CLS


KILL_RECIPE = """
seed_everything: 5
trainer:
  max_epochs: 2
  accelerator: cpu
  devices: 1
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
  limit_val_batches: 0
  log_every_n_steps: 1
  callbacks:
    - class_path: lifecycle.training.ResumableCheckpoint
      init_args: {every_n_train_steps: 4}
model:
  class_path: lifecycle.stages.MaskedLMPretrainingModule
  init_args: {hidden_size: 16, num_layers: 1, num_heads: 2, intermediate_size: 32, max_length: 16}
data:
  class_path: lifecycle.data.CorpusDataModule
  init_args: {dataset: CORPUS, vocab_size: 300, max_length: 16, batch_size: 16, val_fraction: 0.1}
"""


def train_losses(run_dir) -> dict[int, float]:
    """``{step: train/loss}`` from a run's ``metrics.csv`` (a resumed step's row replaces the
    killed run's)."""
    import csv

    with open(run_dir / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


@pytest.mark.slow
def test_a_masked_lm_run_killed_mid_epoch_resumes_to_the_same_losses(corpus, tmp_path):
    from tests.training.killer import run_killed, run_subprocess, write_kill_config

    lines = corpus.read_text().splitlines()[:160]  # 9 steps an epoch
    (tmp_path / "small.txt").write_text("\n".join(lines) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(KILL_RECIPE.replace("CORPUS", str(tmp_path / "small.txt")))
    # killed in the second epoch, 3 steps after its checkpoint
    kill = write_kill_config(tmp_path / "kill.yaml", step=15, every_n_train_steps=4)
    base = ["fit", "--config", recipe, "--trainer.default_root_dir", tmp_path]
    whole = run_subprocess([*base, "--run_name", "whole"])
    assert whole.returncode == 0, whole.stderr[-3000:]
    run_killed(base, kill)  # killed, not crashed
    checkpoint = tmp_path / "killed" / "version_0" / "checkpoints" / "last-step.ckpt"
    resumed_from = torch.load(checkpoint, weights_only=True)["global_step"]
    resumed = run_subprocess([*base, "--run_name", "killed", "--ckpt_path", "last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr + resumed.stdout
    expected = train_losses(tmp_path / "whole" / "version_0")
    per_epoch = len(expected) // 2
    assert per_epoch < resumed_from < 2 * per_epoch and resumed_from % per_epoch  # mid-epoch
    assert train_losses(tmp_path / "killed" / "version_0") == expected


@pytest.mark.parametrize(
    "module, mlm", [(MaskedLMPretrainingModule, True), (CausalLMPretrainingModule, False)]
)
def test_padded_evaluation_rows_count_for_neither_loss_nor_perplexity(
    module, mlm, corpus, tmp_path
):
    """A sharded evaluation loader pads each rank to the same steps (``batch["padding"]``); the
    padded copies must leave the validation loss and perplexity as without them."""
    data = corpus_data(corpus, mlm)
    model = module(**SIZES)
    quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, datamodule=data)
    batch = next(iter(data.val_dataloader()))
    batch = {k: v[:6] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    padded = {k: torch.cat([v, v[:3]]) for k, v in batch.items()}
    padded["padding"] = torch.tensor([False] * 6 + [True] * 3)
    logged = {}
    model.log = lambda name, value, **kw: logged.setdefault(name, []).append(
        (float(value) if name.endswith("loss") else None, kw.get("batch_size"))
    )
    model.eval()
    with torch.no_grad():
        model._eval_step(batch, "val")
        alone = float(model.perplexity["val"].compute())
        model.perplexity["val"].reset()
        model._eval_step(padded, "val")
        with_padding = float(model.perplexity["val"].compute())
    (loss, records), (padded_loss, padded_records) = logged["val/loss"]
    assert padded_loss == pytest.approx(loss, rel=1e-5) and records == padded_records == 6
    assert with_padding == pytest.approx(alone, rel=1e-5)
