"""Every registry's keys are exactly the names config accepts for it."""

from __future__ import annotations

import typing

import pytest

from prunecli import config
from prunecli.core import catalog, schedules, scoring


def _choices(model: type, field: str) -> tuple[str, ...]:
    return typing.get_args(model.model_fields[field].annotation)


def test_methods_registry_matches_config() -> None:
    from prunecli.structured import groups

    assert set(scoring.REGISTRY) == set(catalog.METHODS)
    assert set(groups.REDUCERS) == set(catalog.CHANNEL_METHODS)  # granularity: channel
    assert _choices(config.Prune, "method") == catalog.ALL_METHODS
    assert catalog.ALL_METHODS[: len(catalog.METHODS)] == tuple(catalog.METHODS)


def test_schedules_registry_matches_config() -> None:
    assert set(schedules.BUILDERS) == set(catalog.SCHEDULES)
    assert _choices(config.Schedule, "type") == catalog.SCHEDULES


def test_optimizers_and_strategies_match_config() -> None:
    from prunecli.training import distribute, finetune

    assert set(finetune.OPTIMIZERS) == set(catalog.OPTIMIZERS)
    assert _choices(config.Finetune, "optimizer") == catalog.OPTIMIZERS
    assert set(distribute.STRATEGIES) == set(catalog.STRATEGIES)
    assert _choices(config.Finetune, "strategy") == catalog.STRATEGIES


@pytest.mark.parametrize("method", ["magnitude", "random", "lamp"])
def test_plain_methods_need_nothing(method: str) -> None:
    assert catalog.METHODS[method] == catalog.Needs()
