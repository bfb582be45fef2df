"""The package's structure, read from its AST: no import cycle among its modules (function-level
imports count) and no private name of torch, Lightning, jsonargparse or transformers used
outside ``lifecycle/compat.py``, where each has the version it was checked on and a test
(``tests/test_compat*.py``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lifecycle"
THIRD_PARTY = (
    "lightning",
    "torch",
    "jsonargparse",
    "transformers",
    "torchmetrics",
    "albumentations",
)
# private names of objects the test cannot build cheaply (a Trainer's loops, jsonargparse's
# parser, LightningCLI): flagged unless read on self/cls (where they may be the package's own)
OTHER_PRIVATE = {
    "_combined_loader_states_to_load", "_load_state_dicts", "_data_fetcher", "_instantiator",
    "_given_hyperparameters", "_schedulers", "_set_sampler_epoch", "_datasets", "_fit_loop",
    "_results", "_logger_connector", "_checkpoint_connector", "_accelerator_connector",
    "_strategy", "_launcher", "_data_parallel_size", "_local_tensor", "_get",
    "_check_log_dir_exists", "_last_lr",
}  # fmt: skip


def modules() -> dict[str, Path]:
    """``{dotted module name: path}`` of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its body. Importing ``a.b.c``
    also runs the packages ``a.b`` and ``a`` (unless they enclose the importer)."""
    mods = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, node, path.name == "__init__.py")
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            for target in targets:
                if target.split(".")[0] != "lifecycle":
                    continue
                parts = target.split(".")
                for k in range(1, len(parts) + 1):
                    enclosing = ".".join(parts[:k])
                    if enclosing in mods and not (
                        name == enclosing or name.startswith(enclosing + ".")
                    ):
                        edges[name].add(enclosing)
    return {m: {e for e in edges[m] if e != m} for m in mods}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def third_party_private_names() -> set[str]:
    """Private (``_x``, not dunder) attribute names of the third-party objects the package
    works with: modules, LightningModule/DataModule/Callback/Trainer, datasets, loaders,
    optimizers and schedulers, classes and instances."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, Dataset

    objects: list[object] = [
        torch.nn.Module,
        torch.nn.Module(),
        pl.LightningModule,
        pl.LightningModule(),
        pl.LightningDataModule,
        pl.LightningDataModule(),
        pl.Callback,
        pl.Trainer,
        Dataset,
        DataLoader,
        DataLoader(list(range(4))),
        torch.optim.Optimizer,
        torch.optim.lr_scheduler.LRScheduler,
    ]
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    objects += [optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1)]
    names: set[str] = set()
    for obj in objects:
        names |= set(dir(obj))
        names |= set(getattr(obj, "__dict__", {}))
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def private_uses() -> list[str]:
    """``path:line what`` for each use of a third-party private name outside compat.py: an
    import of a private module or name, an attribute read or write, a string given to
    getattr/hasattr/setattr, a method override of one (``def _apply``)."""
    private = third_party_private_names()
    found = []
    for path in modules().values():
        if path.name == "compat.py":
            continue
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] in THIRD_PARTY:
                    hidden = [a.name for a in node.names if a.name.startswith("_")]
                    if any(p.startswith("_") for p in node.module.split(".")) or hidden:
                        found.append(f"{where}:{node.lineno} from {node.module} import ...")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] in THIRD_PARTY and any(p.startswith("_") for p in parts):
                        found.append(f"{where}:{node.lineno} import {alias.name}")
            elif isinstance(node, ast.Attribute) and node.attr in private:
                found.append(f"{where}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Attribute) and node.attr in OTHER_PRIVATE:
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{where}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Constant) and node.value in private | OTHER_PRIVATE:
                found.append(f"{where}:{node.lineno} {node.value!r}")
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name in private:
                        found.append(f"{where}:{item.lineno} def {node.name}.{item.name}")
    return found


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = "def f():\n    from lifecycle.data import splits\n"
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(ast.parse(source)))


def test_no_private_name_of_a_dependency_is_used_outside_compat():
    found = private_uses()
    assert not found, "private names outside lifecycle/compat.py:\n" + "\n".join(found)


def test_the_private_name_finder_knows_lightnings_and_torchs_private_attributes():
    private = third_party_private_names()
    for name in ("_trainer", "_parameters", "_apply", "_last_lr", "_modules"):
        assert name in private, name


def test_a_light_module_imports_neither_transformers_nor_albumentations():
    code = (
        "import sys; import lifecycle.data.splits; "
        "print(sorted(m for m in ('transformers', 'albumentations', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("module", ["lifecycle.data.text", "lifecycle.stages.distillation"])
def test_the_split_modules_are_packages_of_single_concerns(module):
    path = PACKAGE.parent.joinpath(*module.split("."))
    assert path.is_dir(), f"{module} should be a package"
    sizes = {p.name: len(p.read_text().splitlines()) for p in path.glob("*.py")}
    assert max(sizes.values()) < 500, sizes


def test_the_readme_architecture_lists_every_module():
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme[readme.index("## Architecture") : readme.index("## Development")]
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        folder = relative.rsplit("/", 1)[0] + "/" if "/" in relative else None
        name = path.name
        if relative in section or (folder and folder in section and name in section):
            continue
        if name == "__init__.py" and folder and folder in section:
            continue  # a package listed by its folder
        missing.append(relative)
    assert not missing, f"README's architecture section lacks: {missing}"
