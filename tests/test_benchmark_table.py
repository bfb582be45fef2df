"""The README's benchmark table is `benchmarks/table.md` filled from `benchmarks/results/*.json`
(`benchmarks/readme_table.py`), and every results file carries its protocol or is listed as
waiting for its re-run (benchmarks/README.md)."""

import importlib.util
import json

import pytest

from tests.conftest import REPO

RESULTS = REPO / "benchmarks" / "results"
# Results files measured before the protocol of benchmarks/README.md; each leaves this list when
# its re-run under the protocol lands (issue 22).
AWAITING_RERUN = {"cleaning", "distillation", "distillation_selection"}
PROTOCOL_KEYS = {"seeds", "selection", "selection_runs_per_side", "budget"}
OWN_PROTOCOL = {"scale"}  # a protocol object of its own shape (issue 10 reworks the benchmark)


def table_module():
    spec = importlib.util.spec_from_file_location(
        "readme_table", REPO / "benchmarks" / "readme_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_is_the_template_filled_from_the_results():
    table = table_module()
    readme = (REPO / "README.md").read_text()
    start, end = table.readme_table(readme)
    assert readme[start:end].strip("\n") == table.rendered_table(), (
        "README.md's benchmark table differs from benchmarks/table.md rendered: run "
        "python benchmarks/readme_table.py"
    )
    assert table.main(["--check"]) == 0


def test_every_figure_of_the_template_comes_from_a_results_file():
    text = (REPO / "benchmarks" / "table.md").read_text()
    table = table_module()
    stems = {m.group(1).split("/")[0] for m in table.PLACEHOLDER.finditer(text)}
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) >= 12 and len(stems) >= 12, (len(rows), sorted(stems))
    for row in rows:  # each benchmark's row shows at least one figure of its results
        assert table.PLACEHOLDER.search(row), row[:80]


def test_a_placeholder_that_does_not_resolve_names_the_file_and_the_key(tmp_path):
    table = table_module()
    (tmp_path / "demo.json").write_text(json.dumps({"gain": {"median": 0.0142}, "seeds": [0, 1]}))
    assert table.render("{{demo/gain/median:+.3f}} over {{demo/seeds/1}}", tmp_path) == (
        "+0.014 over 1"
    )
    with pytest.raises(
        table.TableError, match=r"demo.json has no `mean` under `demo/gain` \(median\)"
    ):
        table.render("{{demo/gain/mean:.2f}}", tmp_path)
    with pytest.raises(table.TableError, match="no results file .*nope.json"):
        table.render("{{nope/x}}", tmp_path)


def test_every_results_file_has_a_protocol_or_waits_for_its_rerun():
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        protocol = data.get("protocol") if isinstance(data, dict) else None
        if path.stem in AWAITING_RERUN:
            assert not (protocol and PROTOCOL_KEYS <= set(protocol)), (
                f"{path.name} now has its protocol: take it off AWAITING_RERUN"
            )
            continue
        assert isinstance(protocol, dict), f"{path.name} has no `protocol` object"
        if path.stem not in OWN_PROTOCOL:
            assert PROTOCOL_KEYS <= set(protocol), (path.name, PROTOCOL_KEYS - set(protocol))
