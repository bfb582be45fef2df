"""pytest settings for the notebook run (``pytest --nbmake notebooks``).

nbmake starts one Jupyter kernel per notebook as a child process, and a child inherits this
process's environment. Each notebook reads ``LIFECYCLE_NOTEBOOK_SIZE`` in its first code cell:
``full`` (the default, what a reader gets) or ``small`` (fewer records, epochs and steps where
the notebook is slow; every assertion still runs). The test run asks for ``small``;
``LIFECYCLE_NOTEBOOK_SIZE=full pytest --nbmake notebooks`` runs the readers' settings instead.

The variables are set only while a notebook item runs and restored afterwards, so tests that
share this pytest process (``make test`` runs ``tests`` and ``notebooks`` together) see the
environment they were started with: a test that checks ``import lifecycle`` leaves
``HF_HUB_OFFLINE`` alone must not find it set by us.
"""

import os

import pytest

NOTEBOOK_ENVIRONMENT = {
    "LIFECYCLE_NOTEBOOK_SIZE": "small",
    # Every model the notebooks load is a local folder or an installed package.
    "HF_HUB_OFFLINE": "1",
    # albumentations checks PyPI for a newer version at import otherwise.
    "NO_ALBUMENTATIONS_UPDATE": "1",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Give the notebook's kernel the environment above; values already set win."""
    if item.path.suffix != ".ipynb":
        yield
        return
    saved = {name: os.environ.get(name) for name in NOTEBOOK_ENVIRONMENT}
    for name, value in NOTEBOOK_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
