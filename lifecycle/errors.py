"""The errors a user can cause and fix, apart from the ones that are bugs.

``lifecycle`` commands print a :class:`UserError`'s message alone on stderr and exit with status
2 (``--debug``, or ``LIFECYCLE_DEBUG=1``, shows the traceback too); any other exception is an
internal error and keeps its traceback. Each kind also derives from the built-in exception a
caller would expect (``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps
working in Python code.

A message says what is wrong, where (the file, row or config field) and the fix, e.g.
``data.init_args.num_classes is 5, but the labels go up to 9: set it to 10``.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the data, the config or the files given; the message names it and the fix."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work (a wrong class count, a field that does not fit)."""


class DataError(UserError, ValueError):
    """Data that cannot be used as given (malformed rows, labels out of range, empty splits)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the config names does not exist or is not what it should be."""


class UnsafeLoadError(UserError, ValueError):
    """A file from elsewhere asks to build a class that loading may not build (only
    ``torch.nn.Module`` subclasses, and ``LightningModule`` for checkpoints, are allowed)."""
