"""A user's own project: a backbone and a DataModule wired into lifecycle by ``class_path``
(the README's "Extending" section shows these files; ``tests/test_extending.py`` runs them)."""
