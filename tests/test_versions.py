"""The dependency floors in pyproject.toml stay at the oldest releases the code runs on: each
was established from the feature that needs it (see the comments beside them)."""

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO

# package -> (oldest release the code runs on, what needs it)
FLOORS = {
    "torch": ("2.6", "torch.nn.utils.get_total_norm / clip_grads_with_norm_"),
    "lightning": ("2.6", "load_from_checkpoint(weights_only=), CLI `_class_path` checkpoints"),
    "torchmetrics": ("1.6", "the oldest release tested"),
    "transformers": ("4.53", "DataCollatorForLanguageModeling(mlm_probability=None), seed="),
    "albumentations": ("2.0", "Compose(seed=), set_random_seed"),
    "jsonargparse": ("4.39", "Lightning 2.6's instantiators (applied_instantiation_links)"),
}


def dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    return {r.name: r for r in requirements}


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_a_dependency_floor_is_not_below_what_the_code_needs(package):
    floor, reason = FLOORS[package]
    requirement = dependencies()[package]
    lower = [Version(s.version) for s in requirement.specifier if s.operator in (">=", ">", "==")]
    assert lower, f"{package} has no lower bound in pyproject.toml; it needs >={floor} ({reason})"
    assert max(lower) >= Version(floor), (
        f"pyproject.toml lets {package} go down to {max(lower)}, but the code needs {floor} "
        f"({reason})."
    )
    assert not requirement.specifier.contains(_below(floor), prereleases=True)


def _below(version: str) -> str:
    """A release just under ``version`` (``2.6`` -> ``2.5.999``)."""
    major, minor = Version(version).release[:2]
    return f"{major}.{minor - 1}.999" if minor else f"{major - 1}.999"
