"""Where a sweep's study lives: an Optuna storage from a URL.

- ``sqlite:///<root>/study.db`` (the default: a file in the sweep's folder), or any SQLAlchemy URL
  (``postgresql://user@host/db``, ``mysql://...``) that several machines share: Optuna's
  ``RDBStorage``, with a heartbeat so that a trial whose process died (a killed worker, a lost
  node) is marked failed after :data:`GRACE_SECONDS` and run again by a live worker
  (``RetryHeartbeatStaleTrialCallback``); SQLite waits up to a minute for a lock held by another
  writer instead of failing with "database is locked" (Optuna #820);
- a path ending in ``.log`` or ``.jsonl`` (or ``journal:<path>``): Optuna's ``JournalStorage`` on
  that file, for a shared file system where SQLite's locking is not safe (NFS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lifecycle.errors import ConfigError

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
SQLITE_TIMEOUT_SECONDS = 60
JOURNAL_SUFFIXES = (".log", ".jsonl")


INSTALL = 'install the `tuning` extra: pip install -e ".[tuning]" (or pip install "optuna>=4")'


def require_optuna() -> Any:
    """The ``optuna`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import optuna
    except ImportError as error:
        raise ConfigError(
            f"`lifecycle tune sweep` needs the optuna package, which cannot be imported "
            f"({error}). Fix: {INSTALL}."
        ) from error
    return optuna


def default_storage(root: str | Path) -> str:
    """The study file in the sweep's folder, as a URL."""
    return f"sqlite:///{(Path(root).resolve() / 'study.db').as_posix()}"


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith(JOURNAL_SUFFIXES)


def open_storage(url: str):
    """The Optuna storage for ``url`` (see the module docstring).

    Raises:
        ConfigError: optuna is not installed.
    """
    optuna = require_optuna()
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    engine_kwargs = (
        {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}} if url.startswith("sqlite") else {}
    )
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
    )
