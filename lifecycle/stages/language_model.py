"""Language-model pretraining: ``MaskedLMPretrainingModule`` (BERT-style) and
``CausalLMPretrainingModule`` (GPT-style), on unlabeled text from
:class:`~lifecycle.data.CorpusDataModule`.

The network is a ``transformers`` model built from a small config
(``AutoModelForMaskedLM`` / ``AutoModelForCausalLM``), sized to the tokenizer the DataModule
trained. This is the one place a stage reads its data to build itself: the vocabulary is
the DataModule's (``tokenizer``, :class:`~lifecycle.interfaces.TokenizedData`), read in
``setup`` (after the DataModule's own ``setup`` trained it, before ``configure_model``); data
still flows one way, from the DataModule to the stage, and nothing of the DataModule is
changed. Give ``vocab_size`` to build the network at construction instead. Masking is transformers' ``DataCollatorForLanguageModeling`` (in the DataModule).
Perplexity is torchmetrics' ``Perplexity``. At the end of ``fit`` the run folder gets
``pretrained/``: the language model and tokenizer as ``save_pretrained`` writes them (any
transformers code loads them) and, in the same folder, the encoder without its LM head in the
pretrained-backbone format (:mod:`lifecycle.artifacts`) that fine-tuning reads.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import lightning as L
import torch
from torch import nn
from torchmetrics.text import Perplexity

from lifecycle.artifacts import SavesPretrained
from lifecycle.errors import ConfigError
from lifecycle.interfaces import (
    PRETRAINED_OUTPUTS,
    RUN_OUTPUTS,
    StageOutput,
    optional,
    require,
)
from lifecycle.stages.supervised import attached_trainer, trainer_datamodule
from lifecycle.training.clipping import ShardedClipping
from lifecycle.training.optim import (
    OptimizerFactory,
    SchedulerFactory,
    configure_stage_optimizers,
)
from lifecycle.training.sharding import data_parallel_mesh, shard_module


class MaskedLMPretrainingModule(SavesPretrained, ShardedClipping, L.LightningModule):
    """Masked-language-model pretraining of a small Transformer (BERT by default).

    Logs ``train/loss`` and ``val/loss``, ``val/perplexity`` (and ``test/...``): the
    perplexity of the masked tokens (of the next tokens for the causal module), over the
    whole split. Validation and test are masked once, with the data's seed, so their
    perplexity compares across epochs and runs.

    Args:
        model_type: a transformers model type with a masked-LM head (``bert``, ``roberta``,
            ``electra``, ...).
        hidden_size: width of every layer.
        num_layers: Transformer layers.
        num_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: width of each feed-forward block.
        max_length: position embeddings (at least the data's ``max_length``).
        dropout: dropout on hidden states and attention weights.
        vocab_size: embedding rows; default the DataModule's tokenizer size (set at ``fit``).
        pooling: how the exported backbone pools token states for a classifier: ``"mean"``,
            ``"cls"`` or ``"last"`` (see :class:`~lifecycle.models.TransformerEncoder`).
        optimizer: builds the optimizer from the parameters (``AdamW`` by default).
        scheduler: builds a learning-rate scheduler, e.g.
            :class:`~lifecycle.training.optim.WarmupCosineLR` (``total_steps`` filled in).
        scheduler_interval: ``"step"`` or ``"epoch"``.
        save_to: where the end of ``fit`` writes the model; ``None`` for
            ``<run folder>/pretrained`` (nothing without a logger).
    """

    objective = "masked-lm"
    default_model_type = "bert"
    # what the run's best checkpoint is chosen by (lifecycle.cli's default checkpointing)
    monitor: ClassVar[str] = "val/loss"
    outputs: ClassVar[dict[str, StageOutput]] = {
        **RUN_OUTPUTS,
        **PRETRAINED_OUTPUTS,
        "language_model": StageOutput(
            "language_model",
            "pretrained/config.json",
            "the whole language model as save_pretrained writes it (in the backbone folder: "
            "AutoModelForMaskedLM/AutoModelForCausalLM.from_pretrained read that folder)",
        ),
        "tokenizer": StageOutput(
            "tokenizer",
            "pretrained/tokenizer.json",
            "the tokenizer the model was trained with (in the backbone folder, which "
            "`data.init_args.tokenizer` names)",
        ),
    }

    def __init__(
        self,
        model_type: str | None = None,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        intermediate_size: int = 512,
        max_length: int = 128,
        dropout: float = 0.1,
        vocab_size: int | None = None,
        pooling: Literal["mean", "cls", "last"] = "mean",
        optimizer: OptimizerFactory = torch.optim.AdamW,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["epoch", "step"] | None = None,
        save_to: str | None = None,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(
                f"`hidden_size` ({hidden_size}) must be a multiple of `num_heads` ({num_heads})."
            )
        # `vocab_size` and `max_length` are also the DataModule's hyperparameters, with other
        # meanings (its largest vocabulary, its row length); Lightning refuses to log two
        # different values under one name, so these two are kept out of `hparams` and written
        # into each checkpoint's instead (`on_save_checkpoint`), which `load_from_checkpoint` reads
        self.save_hyperparameters(ignore=["vocab_size", "max_length"])
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.model_type = model_type or self.default_model_type
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.save_to = save_to
        self.model: nn.Module | None = None
        self.perplexity = nn.ModuleDict(
            {stage: Perplexity(ignore_index=-100) for stage in ("val", "test")}
        )
        if vocab_size is not None:
            self.build(vocab_size)

    # ----------------------------------------------------------------- the network
    def config(self, vocab_size: int, pad_id: int = 0, **extra):
        """The transformers config of the network for a vocabulary of ``vocab_size``."""
        from lifecycle.models.text import transformer_config

        h = self.hparams
        return transformer_config(
            self.model_type, vocab_size, h.hidden_size, h.num_layers, h.num_heads,
            h.intermediate_size, self.max_length, h.dropout, pad_id, **extra,
        )  # fmt: skip

    def auto_class(self):
        from transformers import AutoModelForMaskedLM

        return AutoModelForMaskedLM

    def build(self, vocab_size: int, tokenizer=None) -> None:
        """Create the network for ``vocab_size`` tokens (``tokenizer`` gives the special ids)."""
        if vocab_size < 1:
            raise ValueError(f"`vocab_size` must be positive, got {vocab_size}.")
        extra = {}
        pad = 0
        if tokenizer is not None:
            pad = tokenizer.pad_token_id
            ids = {"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id}
            extra = {k: v for k, v in ids.items() if v is not None}
        config = self.config(vocab_size, pad, **extra)
        try:
            self.model = self.auto_class().from_config(config)
        except ValueError as err:
            raise ValueError(
                f"`model_type: {self.model_type}` has no {self.objective} model in transformers "
                f"({err}). Fix: pick a type that has one (masked: bert, roberta; causal: gpt2)."
            ) from err
        self.vocab_size = vocab_size

    def setup(self, stage: str) -> None:
        from lifecycle.data.tokenization import embedding_rows_needed

        datamodule = trainer_datamodule(self)
        tokenizer = optional(datamodule, "tokenizer")
        if self.model is None and datamodule is not None:
            # the one read of data that builds a stage: the network's vocabulary
            tokenizer = require(
                datamodule,
                "tokenizer",
                f"{type(self).__name__} (it sizes its embedding to the data's tokenizer)",
                "use lifecycle.data.CorpusDataModule, give your DataModule a `tokenizer` "
                "(lifecycle.interfaces.TokenizedData), or set `model.init_args.vocab_size`",
            )
        length = optional(datamodule, "max_length")
        if isinstance(length, int) and length > self.max_length:
            raise ConfigError(
                f"The data's rows reach {length} tokens but the model has "
                f"{self.max_length} positions. Fix: set `model.init_args.max_length: "
                f"{length}` or `data.init_args.max_length: {self.max_length}`."
            )
        needed = embedding_rows_needed(tokenizer) if tokenizer is not None else None
        if self.model is None:
            if needed is None:
                raise ConfigError(
                    "The model's vocabulary size is unknown: the DataModule has no tokenizer. "
                    "Fix: use lifecycle.data.CorpusDataModule, or set `vocab_size`."
                )
            self.build(needed, tokenizer)
        elif needed is not None and needed > self.vocab_size:
            raise ConfigError(
                f"The data's tokenizer has {needed} tokens but the model's embedding holds "
                f"{self.vocab_size}: ids past {self.vocab_size - 1} have no embedding. Fix: "
                "leave `model.init_args.vocab_size` unset (it follows the tokenizer), or lower "
                "`data.init_args.vocab_size`; for a model from a checkpoint, tokenize with the "
                "tokenizer saved with it (`data.init_args.tokenizer: "
                "<run>/version_N/tokenizer`)."
            )
        mlm = optional(datamodule, "mlm")
        if mlm is not None and bool(mlm) != (self.objective == "masked-lm"):
            raise ValueError(
                f"{type(self).__name__} trains a {self.objective} model but the DataModule "
                f"prepares {'masked' if mlm else 'causal'} LM batches. Fix: set "
                f"`data.init_args.mlm: {str(self.objective == 'masked-lm').lower()}`."
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint.setdefault("hyper_parameters", {}).update(
            vocab_size=self.vocab_size, max_length=self.max_length
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse, before its weights are loaded, a checkpoint whose network was built for
        another vocabulary than this one (sized at ``setup`` to the data's tokenizer)."""
        saved = checkpoint.get("hyper_parameters", {}).get("vocab_size")
        if saved is not None and self.vocab_size is not None and saved != self.vocab_size:
            raise ConfigError(
                f"The checkpoint's model embeds {saved} tokens (its tokenizer's), but this "
                f"model was built for {self.vocab_size} (the data's tokenizer): its weights "
                "do not fit. Fix: tokenize with the checkpoint's tokenizer, saved beside it "
                "(`data.init_args.tokenizer: <run>/version_N/tokenizer`), so the model is built "
                "for that one."
            )

    def configure_model(self) -> None:
        """Shard the Transformer block by block with FSDP2 under ``ModelParallelStrategy``."""
        mesh = data_parallel_mesh(self)
        if mesh is None or self.model is None:
            return
        shard_module([self.model], mesh, owner=self)

    # ----------------------------------------------------------------- steps
    def forward(self, input_ids, attention_mask=None, labels=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    def _out(self, batch: dict):
        missing = [k for k in ("input_ids", "labels") if k not in batch]
        if missing:
            raise KeyError(
                f"Language-model batches need {missing} (the batch has {sorted(batch)}). "
                "Fix: use lifecycle.data.CorpusDataModule."
            )
        return self(batch["input_ids"], batch.get("attention_mask"), batch["labels"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self._out(batch)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return out.loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        out = self._out(batch)
        logits, labels, loss = out.logits.float(), batch["labels"], out.loss
        if self.objective == "causal-lm":  # token t predicts token t + 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        padding, records = batch.get("padding"), len(labels)
        if padding is not None:
            # a sharded evaluation loader pads each rank to the same steps: every rank runs the
            # forward, but the padded copies predict nothing that is counted
            padding = padding.to(device=labels.device, dtype=torch.bool)
            labels = labels.masked_fill(padding[:, None], -100)
            records = int((~padding).sum())
            if records:
                loss = nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
                )
        self.perplexity[stage].update(logits, labels)
        if records:
            self.log(f"{stage}/loss", loss, batch_size=records, sync_dist=True)
        self.log(f"{stage}/perplexity", self.perplexity[stage], prog_bar=stage == "val")

    def on_fit_start(self) -> None:
        # a `validate` before `fit` leaves the metric states as inference-mode tensors, which
        # fit's validation (run without inference mode) cannot update in place
        for metric in self.perplexity.values():
            metric.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self):
        return configure_stage_optimizers(self)

    # ----------------------------------------------------------------- export
    @property
    def backbone(self) -> nn.Module | None:
        """The network without its LM head, as a :class:`~lifecycle.models.TransformerEncoder`
        (a classifier's backbone) holding the very modules of the language model (not a copy):
        as in every other stage, ``module.backbone`` is the backbone that trains, so the
        fine-tuning callbacks (:mod:`lifecycle.training.finetuning`) freeze and unfreeze it.
        ``None`` until the network is built (``setup``, or ``vocab_size`` given). It is not a
        registered submodule, so the checkpoint keeps the language model's keys alone."""
        if self.model is None:
            return None
        base = self.model.base_model
        view = self.__dict__.get("_backbone_view")
        if view is None or view.encoder is not base:
            from lifecycle.models.text import TransformerEncoder

            view = TransformerEncoder.around(base, self.hparams.pooling, self.max_length)
            self.__dict__["_backbone_view"] = view  # not setattr: no submodule registered
        return view

    def save_pretrained(self, folder: str, metrics: dict | None = None) -> None:
        """Write the language model and tokenizer (``save_pretrained``) and the encoder as a
        pretrained backbone (:mod:`lifecycle.artifacts`) to ``folder``. Under FSDP every
        process must call it; rank 0 writes."""
        from lifecycle.artifacts import full_state_dict, save_backbone

        backbone = self.backbone
        # gathering shards is a collective under FSDP2: every rank, before rank 0 writes
        backbone_state = full_state_dict(backbone)
        state = full_state_dict(self.model)
        trainer = attached_trainer(self)
        if trainer is not None and not trainer.is_global_zero:
            return
        self.model.save_pretrained(folder, state_dict=state)
        datamodule = trainer_datamodule(self)
        save_backbone(
            folder,
            backbone,
            backbone_state,
            kind="text",
            datamodule=datamodule,
            produced_by={
                "stage": f"{type(self).__module__}.{type(self).__qualname__}",
                "objective": self.objective,
                "transformers_class": type(self.model).__name__,
                "epochs": trainer.current_epoch if trainer is not None else None,
                "steps": trainer.global_step if trainer is not None else None,
                "metrics": metrics or {},
            },
        )


class CausalLMPretrainingModule(MaskedLMPretrainingModule):
    """Causal-language-model pretraining (next-token prediction) of a small GPT-2 by default:
    the same arguments, outputs and export as :class:`MaskedLMPretrainingModule`, with the
    DataModule's ``mlm: false``. ``model_type`` is any transformers type with a causal-LM
    head (``gpt2``, ``gpt_neox``, ``llama``, ...)."""

    objective = "causal-lm"
    default_model_type = "gpt2"

    def auto_class(self):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM
