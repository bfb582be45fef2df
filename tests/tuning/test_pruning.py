"""The pruners a sweep file names: what each stops, on an in-memory Optuna study."""

import pytest

optuna = pytest.importorskip("optuna")

from lifecycle.tuning.pruning import build_pruner  # noqa: E402


def pruned_at_first_validation(name: str, earlier: list[float], value: float) -> bool:
    """Whether a trial reporting ``value`` at its first validation is stopped by ``name``
    after trials that reported ``earlier`` there, asked the pruner (as the callback does:
    successive halving records a rung then) and finished."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", pruner=build_pruner(name))
    for v in earlier:
        trial = study.ask()
        trial.report(v, step=1)
        trial.should_prune()
        study.tell(trial, v)
    trial = study.ask()
    trial.report(value, step=1)
    return bool(trial.should_prune())


@pytest.mark.parametrize(
    "value, median, halving",
    [(0.95, False, False), (0.85, False, False), (0.75, False, True), (0.65, True, True)],
)
def test_successive_halving_keeps_the_best_third_where_the_median_keeps_the_better_half(
    value, median, halving
):
    earlier = [0.9, 0.8, 0.7, 0.6, 0.5]  # median 0.7; with the trial, the best third is 2
    assert pruned_at_first_validation("median", earlier, value) is median
    assert pruned_at_first_validation("successive_halving", earlier, value) is halving
    assert pruned_at_first_validation("none", earlier, value) is False


def test_a_tune_stages_config_takes_each_pruner_and_refuses_others():
    from jsonargparse import ArgumentParser

    from lifecycle.tuning.space import PRUNERS
    from lifecycle.tuning.stage import SweepStage

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SweepStage, "tuning")
    params = (
        '--tuning.params={"model.init_args.optimizer.init_args.lr": {"low": 0.001, "high": 0.1}}'
    )
    for name in PRUNERS:
        assert parser.parse_args([params, f"--tuning.pruner={name}"]).tuning.pruner == name
    with pytest.raises(Exception, match="asha"):
        parser.parse_args([params, "--tuning.pruner=asha"])
