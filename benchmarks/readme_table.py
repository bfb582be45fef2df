"""The README's benchmark table, written from ``benchmarks/results/*.json``: never typed by hand.

``benchmarks/table.md`` is the table's template: its prose is written there, and every measured
figure is a placeholder that names a results file, a path into its JSON and a format:

    {{tuning/pruned_time_ratio/median:.2f}}     -> 0.73   (results/tuning.json)
    {{lifecycle/cached_seconds:,.1f}}           -> 11.5
    {{scale/per_seed/0/value}}                  -> as written (true/false for a bool)
    {{augmentation/acc_gain/median*100:+.2f}}   -> +0.52  (a number scaled: points, MB, ...)

The path's first part is the file's stem; the next are keys (or list indices), split on ``/``;
``*FACTOR`` after the path scales a number; after the last ``:`` comes a Python format spec
(none: the value as JSON writes it; ``e`` writes 1.1e-3, not 1.1e-03). A path
that is not there is an error naming the file and the key.

    python benchmarks/readme_table.py           # rewrites the table in README.md
    python benchmarks/readme_table.py --check   # exit 1 if README.md's table is not the rendering
    python benchmarks/readme_table.py --render FILE   # print FILE rendered (to write a template row)

``tests/test_benchmark_table.py`` runs the check, so a results file and the README cannot
disagree on a commit.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
TEMPLATE = HERE / "table.md"
README = REPO / "README.md"
BEGIN = (
    "<!-- the benchmark table: written by benchmarks/readme_table.py from "
    "benchmarks/results/*.json; edit benchmarks/table.md -->"
)
END = "<!-- end of the benchmark table -->"
PLACEHOLDER = re.compile(r"\{\{([^{}]+?)\}\}")


class TableError(ValueError):
    """A placeholder that does not resolve, or a README without the table's markers."""


@cache
def results(stem: str, folder: Path = RESULTS):
    path = folder / f"{stem}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.json")))
        raise TableError(f"no results file {path} (known: {known})")
    return json.loads(path.read_text())


def value_at(spec: str, folder: Path = RESULTS):
    """The value a placeholder's path names, and its format spec (``None``: none given)."""
    path, colon, fmt = spec.partition(":")
    path, star, factor = path.partition("*")
    stem, *keys = path.strip().split("/")
    node = results(stem, folder)
    walked = stem
    for key in keys:
        if (
            isinstance(node, list)
            and key.lstrip("-").isdigit()
            and -len(node) <= int(key) < len(node)
        ):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            choices = ", ".join(map(str, node)) if isinstance(node, dict) else f"{len(node)} items"
            raise TableError(
                f"{{{{{spec}}}}}: {stem}.json has no `{key}` under `{walked}` ({choices})"
            )
        walked += f"/{key}"
    if star:
        node = node * float(factor)
    return node, (fmt if colon else None)


def show(value, fmt: str | None) -> str:
    if fmt is None:
        return json.dumps(value) if isinstance(value, bool) or value is None else str(value)
    text = format(value, fmt)
    if fmt.endswith("e"):  # 1.1e-3, as people write it, not Python's 1.1e-03
        text = re.sub(r"e([+-])0(\d)$", r"e\1\2", text)
    return text


def render(text: str, folder: Path = RESULTS) -> str:
    """``text`` with every placeholder replaced by its figure."""
    return PLACEHOLDER.sub(lambda m: show(*value_at(m.group(1), folder)), text)


def rendered_table(folder: Path = RESULTS) -> str:
    return render(TEMPLATE.read_text(), folder).rstrip("\n")


def readme_table(readme: str) -> tuple[int, int]:
    """Where the table sits in the README's text: (after the begin marker, at the end marker)."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise TableError(f"README.md has no `{BEGIN}` ... `{END}` markers around the table")
    return start + len(BEGIN), end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs")
    parser.add_argument("--render", type=Path, help="print this file rendered")
    args = parser.parse_args(argv)
    try:
        if args.render:
            print(render(args.render.read_text()), end="")
            return 0
        text = README.read_text()
        start, end = readme_table(text)
        table = rendered_table()
        new = text[:start] + "\n" + table + "\n" + text[end:]
        if args.check:
            if new != text:
                print("README.md's benchmark table is not benchmarks/table.md rendered: run "
                      "python benchmarks/readme_table.py", file=sys.stderr)  # fmt: skip
                return 1
            return 0
        README.write_text(new)
        print(f"wrote the benchmark table of {README} ({table.count(chr(10)) + 1} lines)")
        return 0
    except TableError as error:
        print(f"readme_table: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
