"""The sweep file: every shape of parameter parsed, each mistake refused with its key and the
allowed values, and a trial's values turned into command-line overrides and an override file."""

from __future__ import annotations

import pytest
import yaml

from lifecycle.errors import ConfigError, MissingFileError
from lifecycle.tuning.overrides import nested, write_override_file
from lifecycle.tuning.space import field_hint, load_sweep, parse_sweep

OPTIMIZERS = {
    "sgd": {"class_path": "torch.optim.SGD"},
    "momentum": {"class_path": "torch.optim.SGD", "init_args": {"momentum": 0.9}},
    "adam": {"class_path": "torch.optim.Adam"},
}


def sweep_of(**params):
    return {"trials": 5, "params": params}


def test_every_kind_of_parameter_is_parsed_in_the_files_order():
    sweep = parse_sweep(
        {
            "trials": 7,
            "pruner": "hyperband",
            "sampler": "random",
            "seed": 3,
            "metric": "val/accuracy",
            "params": {
                "model.init_args.optimizer": {"choices": OPTIMIZERS},
                "model.init_args.optimizer.init_args.lr": {"low": 1e-4, "high": 0.1, "log": True},
                "model.init_args.scheduler.init_args.max_lr": {
                    "same_as": "model.init_args.optimizer.init_args.lr"
                },
                "data.init_args.batch_size": {"choices": [32, 64]},
                "model.init_args.backbone.init_args.hidden": {
                    "type": "int",
                    "low": 64,
                    "high": 256,
                    "step": 64,
                },  # fmt: skip
            },
        }
    )
    kinds = [(p.field.rsplit(".", 1)[-1], p.kind) for p in sweep.params]
    assert kinds == [
        ("optimizer", "categorical"), ("lr", "float"), ("max_lr", "same_as"),
        ("batch_size", "categorical"), ("hidden", "int"),
    ]  # fmt: skip
    assert (sweep.trials, sweep.pruner, sweep.sampler, sweep.seed) == (7, "hyperband", "random", 3)
    assert sweep.param("data.init_args.batch_size").choices == {"32": 32, "64": 64}
    values = {
        "model.init_args.optimizer": OPTIMIZERS["momentum"],
        "model.init_args.optimizer.init_args.lr": 0.01,
        "model.init_args.scheduler.init_args.max_lr": 0.01,
    }
    assert sweep.overrides(values) == [
        '--model.init_args.optimizer={"class_path": "torch.optim.SGD", "init_args": {"momentum": 0.9}}',
        "--model.init_args.optimizer.init_args.lr=0.01",
        "--model.init_args.scheduler.init_args.max_lr=0.01",
    ]


def test_values_become_a_nested_override_file_with_the_chosen_class_and_its_own_arguments(tmp_path):
    values = {
        "model.init_args.optimizer": OPTIMIZERS["momentum"],
        "model.init_args.optimizer.init_args.lr": 0.02,
        "data.init_args.batch_size": 64,
    }
    assert nested(values) == {
        "model": {"init_args": {"optimizer": {
            "class_path": "torch.optim.SGD", "init_args": {"momentum": 0.9, "lr": 0.02},
        }}},
        "data": {"init_args": {"batch_size": 64}},
    }  # fmt: skip
    assert OPTIMIZERS["momentum"] == {
        "class_path": "torch.optim.SGD",
        "init_args": {"momentum": 0.9},
    }
    path = write_override_file(tmp_path / "best.yaml", values, ["the best trial", "", "run it"])
    text = path.read_text()
    assert text.startswith("# the best trial\n#\n# run it\n")
    assert yaml.safe_load(text) == nested(values)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"low": 0.1, "high": 0.01}, r"`low` \(0.1\) must be below `high` \(0.01\)"),
        ({"low": 0, "high": 1, "log": True}, r"a log range needs `low` > 0"),
        ({"low": 1e-3, "high": 1, "log": True, "step": 0.1}, r"`step` and `log: true`"),
        ({"low": 1, "high": 5.5, "type": "int"}, r"`type: int` needs whole `low` and `high`"),
        ({"low": 1, "high": 5, "type": "str"}, r"type must be float or int"),
        ({"low": 1}, r"needs both `low` and `high`"),
        (
            {"low": 1, "high": 2, "scale": "log"},
            r"unknown key \['scale'\].*type, low, high, log, step",
        ),
        ({"choices": []}, r"choices must be a non-empty list"),
        ({"choices": [{"class_path": "torch.optim.SGD"}]}, r"needs a name"),
        ({"low": "small", "high": 1}, r"low must be a finite number"),
        (0.1, r"must be a mapping"),
    ],
)
def test_a_mistaken_parameter_is_refused_naming_it_and_what_it_takes(spec, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_sweep(sweep_of(**{"model.init_args.optimizer.init_args.lr": spec}), "sw.yaml")
    assert "sw.yaml: params.model.init_args.optimizer.init_args.lr" in str(caught.value)


def test_an_unknown_class_path_names_the_modules_closest_classes():
    spec = {"choices": {"adam": {"class_path": "torch.optim.Adamm"}}}
    with pytest.raises(ConfigError) as caught:
        parse_sweep(sweep_of(**{"model.init_args.optimizer": spec}), "sw.yaml")
    message = str(caught.value)
    assert "params.model.init_args.optimizer.choices.adam.class_path" in message
    assert (
        "`torch.optim` has no class `Adamm`" in message
        and "Did you mean torch.optim.Adam" in message
    )
    with pytest.raises(ConfigError, match="cannot be imported"):
        parse_sweep(
            sweep_of(
                **{"model.init_args.optimizer": {"choices": {"x": {"class_path": "nope.Opt"}}}}
            )
        )


def test_top_level_mistakes_are_named():
    with pytest.raises(ConfigError, match=r"unknown key `trails` \(did you mean `trials`\?\)"):
        parse_sweep({"trails": 3, "params": {"a": {"choices": [1]}}})
    refused = "`pruner: asha` is not one of median, successive_halving, hyperband, none"
    with pytest.raises(ConfigError, match=refused):
        parse_sweep({"pruner": "asha", "params": {"a": {"choices": [1]}}})
    with pytest.raises(ConfigError, match="`trials` must be a positive integer"):
        parse_sweep({"trials": 0, "params": {"a": {"choices": [1]}}})
    with pytest.raises(ConfigError, match="`params` must map config fields"):
        parse_sweep({"trials": 3})
    with pytest.raises(
        ConfigError, match=r"same_as: `b` is not a field searched before it. Searched: a"
    ):
        parse_sweep({"params": {"a": {"choices": [1]}, "c": {"same_as": "b"}}})


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(MissingFileError, match="--sweep .*no such file"):
        load_sweep(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("params: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep(broken)


def test_field_hint_names_where_a_path_leaves_the_config_and_the_fields_there():
    config = {
        "model": {"init_args": {"optimizer": {"init_args": {"lr": 0.1, "betas": [0.9, 0.99]}}}}
    }
    hint = field_hint(config, "model.init_args.optimizer.init_args.lrr")
    assert hint == (
        "model.init_args.optimizer.init_args has no `lrr` (did you mean `lr`?); its fields: lr, betas"
    )
    assert field_hint(config, "model.init_args.optimizer.init_args.lr") == ""
