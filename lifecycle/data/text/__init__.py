"""Text DataModules: ``TextClassificationDataModule`` for labelled texts and ``CorpusDataModule``
for language-model pretraining on unlabeled text.

Both read a built-in dataset or the user's file (:mod:`lifecycle.data.corpora`), put identical
texts into one split only and keep one record of each (:mod:`lifecycle.data.dedup`), train a
tokenizer on the training split (or load one from a folder), and pad each batch to its longest
text. Records left out are counted, logged and written with their reasons to
``data_issues.csv`` in the run folder; the tokenizer is saved beside it (``tokenizer/``) and in
every checkpoint, so ``test``/``predict`` from a checkpoint tokenize exactly as training did.

One concern per module:

- :mod:`~lifecycle.data.text.records`: token-id row helpers (padding, windows, seeded RNG);
- :mod:`~lifecycle.data.text.datasets`: ``TextDataset`` and ``LanguageModelingDataset``;
- :mod:`~lifecycle.data.text.base`: ``TextDataModule``, what both DataModules share;
- :mod:`~lifecycle.data.text.classification`: ``TextClassificationDataModule``;
- :mod:`~lifecycle.data.text.corpus`: ``CorpusDataModule``.

The toolkit's own modules import from the submodules; this package re-exports their public
names for users and recipes (``lifecycle.data.text.TextClassificationDataModule``).
"""

from lifecycle.data.dedup import standard_text, text_key
from lifecycle.data.text.base import TextDataModule
from lifecycle.data.text.classification import TextClassificationDataModule
from lifecycle.data.text.corpus import CorpusDataModule
from lifecycle.data.text.datasets import LanguageModelingDataset, TextDataset
from lifecycle.data.text.records import chunk_documents, pad_rows, seeded_torch_rng

__all__ = [
    "CorpusDataModule",
    "LanguageModelingDataset",
    "TextClassificationDataModule",
    "TextDataModule",
    "TextDataset",
    "chunk_documents",
    "pad_rows",
    "seeded_torch_rng",
    "standard_text",
    "text_key",
]
