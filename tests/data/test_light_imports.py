"""The re-exporting packages ``lifecycle.data`` and ``lifecycle.data.cleaning`` load their names
on first use (so that a light submodule stays light: ``tests/test_structure.py`` checks
``lifecycle.data.splits``) and still give every name recipes and users import."""

from __future__ import annotations

import importlib

import pytest


def test_the_package_reexports_still_resolve():
    import lifecycle.data as data
    import lifecycle.data.cleaning as cleaning
    from lifecycle.data.cleaning.stage import DataCleaner
    from lifecycle.data.images import ImageClassificationDataModule

    assert data.ImageClassificationDataModule is ImageClassificationDataModule
    assert cleaning.DataCleaner is DataCleaner
    assert set(data.__all__) <= set(dir(data)) and set(cleaning.__all__) <= set(dir(cleaning))
    for package in (data, cleaning):
        for name in package.__all__:
            defining = importlib.import_module(package._EXPORTS[name])
            assert getattr(package, name) is getattr(defining, name), name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        data.Nope  # noqa: B018
