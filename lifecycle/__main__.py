"""``python -m lifecycle``: the ``lifecycle`` command (see :mod:`lifecycle.cli`)."""

from lifecycle.cli import main

if __name__ == "__main__":
    main()
