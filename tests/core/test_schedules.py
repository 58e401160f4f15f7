"""schedules.py: sparsity per optimizer step, worked out by hand from Zhu & Gupta (2017)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from prunecli.core import schedules
from prunecli.core.schedules import Constant, Iterative, OneShot, Plan, Polynomial

# --- one_shot ----------------------------------------------------------------------------


def test_one_shot_is_final_from_step_zero_and_updates_only_there():
    s = OneShot(0.8)
    assert [s.sparsity_at(t) for t in (0, 1, 99, 10**9)] == [0.8, 0.8, 0.8, 0.8]
    assert s.updates_at(0)
    assert not any(s.updates_at(t) for t in (1, 2, 100, 1000))


def test_schedules_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        OneShot(0.5).final = 0.9  # type: ignore[misc]


# --- constant ----------------------------------------------------------------------------


def test_constant_is_dense_until_begin_then_final():
    s = Constant(final=0.6, begin=10)
    assert s.sparsity_at(0) == 0.0
    assert s.sparsity_at(9) == 0.0
    assert s.sparsity_at(10) == 0.6
    assert s.sparsity_at(500) == 0.6
    assert [t for t in range(40) if s.updates_at(t)] == [10]


def test_constant_at_zero_behaves_like_one_shot():
    s = Constant(final=0.5, begin=0)
    assert s.sparsity_at(0) == 0.5
    assert [t for t in range(10) if s.updates_at(t)] == [0]


# --- polynomial --------------------------------------------------------------------------


def test_polynomial_docstring_example():
    # initial 0, final 0.8, power 3, steps 0..10: s_5 = 0.8 - 0.8 * 0.5**3 = 0.7
    s = Polynomial(initial=0.0, final=0.8, begin=0, end=10, power=3)
    assert s.sparsity_at(0) == pytest.approx(0.0)
    assert s.sparsity_at(5) == pytest.approx(0.7)
    assert s.sparsity_at(10) == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        # s_t = 0.9 + (0.2 - 0.9) * (1 - (t - 10) / 20) ** 2
        (10, 0.2),  # (1 - 0)^2 = 1         -> 0.9 - 0.7
        (15, 0.50625),  # (0.75)^2 = 0.5625 -> 0.9 - 0.39375
        (20, 0.725),  # (0.5)^2 = 0.25      -> 0.9 - 0.175
        (26, 0.872),  # (0.2)^2 = 0.04      -> 0.9 - 0.028
        (30, 0.9),  # end: final
        (31, 0.9),  # after the end: held
        (10**6, 0.9),
    ],
)
def test_polynomial_values_by_hand(step, expected):
    s = Polynomial(initial=0.2, final=0.9, begin=10, end=30, power=2, frequency=4)
    assert s.sparsity_at(step) == pytest.approx(expected, abs=1e-12)


def test_polynomial_before_begin_has_no_mask():
    s = Polynomial(initial=0.2, final=0.9, begin=10, end=30, power=2)
    assert s.sparsity_at(0) == 0.0
    assert s.sparsity_at(9) == 0.0


def test_polynomial_power_one_is_linear():
    s = Polynomial(initial=0.0, final=0.5, begin=0, end=4, power=1)
    assert [s.sparsity_at(t) for t in range(6)] == pytest.approx([0, 0.125, 0.25, 0.375, 0.5, 0.5])


def test_polynomial_rises_monotonically_and_fast_first():
    s = Polynomial(initial=0.0, final=0.8, begin=0, end=100, power=3)
    values = [s.sparsity_at(t) for t in range(101)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    # power 3: the first half gains 7/8 of the rise
    assert values[50] == pytest.approx(0.7)


def test_polynomial_updates_at_frequency_multiples_from_begin_and_at_end():
    s = Polynomial(initial=0.0, final=0.8, begin=10, end=29, power=3, frequency=4)
    assert [t for t in range(60) if s.updates_at(t)] == [10, 14, 18, 22, 26, 29]


def test_polynomial_end_on_a_multiple_is_not_doubled():
    s = Polynomial(initial=0.0, final=0.8, begin=0, end=12, power=3, frequency=4)
    assert [t for t in range(30) if s.updates_at(t)] == [0, 4, 8, 12]


def test_polynomial_frequency_one_updates_every_step_of_the_window():
    s = Polynomial(initial=0.0, final=0.5, begin=2, end=5, frequency=1)
    assert [t for t in range(10) if s.updates_at(t)] == [2, 3, 4, 5]


def test_polynomial_default_power_and_frequency():
    s = Polynomial(initial=0.0, final=0.8, begin=0, end=1000)
    assert (s.power, s.frequency) == (3.0, 100)
    assert [t for t in range(1200) if s.updates_at(t)] == list(range(0, 1001, 100))


# --- invalid arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Constant(final=1.0, begin=0), r"final sparsity must be >= 0 and < 1, got 1.0"),
        (lambda: Constant(final=-0.1, begin=0), r"got -0.1"),
        (lambda: Constant(final=0.5, begin=-1), r"steps must be >= 0"),
        (lambda: Polynomial(0.0, 0.8, begin=5, end=5), r"begin < end, got 5, 5"),
        (lambda: Polynomial(0.0, 0.8, begin=6, end=5), r"begin < end, got 6, 5"),
        (lambda: Polynomial(0.0, 1.2, begin=0, end=5), r"final sparsity must be >= 0 and < 1"),
        (lambda: Polynomial(0.0, 0.5, begin=-2, end=5), r"steps must be >= 0"),
    ],
)
def test_invalid_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_one_shot_rejects_final_outside_range():
    with pytest.raises(ValueError, match="final sparsity"):
        OneShot(1.5)


# --- build: epochs -> steps --------------------------------------------------------------


def test_build_one_shot():
    s = schedules.build("one_shot", 0.7, Plan(10, 20))
    assert s == OneShot(0.7)


def test_build_constant_converts_fractional_start_epoch():
    s = schedules.build("constant", 0.6, Plan(12, 36, start_epoch=1.5))
    assert s == Constant(final=0.6, begin=18)


def test_build_polynomial_converts_fractional_epochs_to_steps():
    s = schedules.build(
        "polynomial",
        0.8,
        Plan(12, 36, start_epoch=0.5, end_epoch=2.25, initial=0.1, power=2, frequency=5),
    )
    assert s == Polynomial(initial=0.1, final=0.8, begin=6, end=27, power=2, frequency=5)
    # begin 0.5 * 12 = 6, end 2.25 * 12 = 27; step 13 is (13 - 6) / 21 = 1/3 of the way
    assert s.sparsity_at(13) == pytest.approx(0.8 + (0.1 - 0.8) * (2 / 3) ** 2)
    assert s.sparsity_at(27) == pytest.approx(0.8)


def test_build_polynomial_defaults_span_the_first_epoch():
    s = schedules.build("polynomial", 0.5, Plan(40, 80))
    assert (s.begin, s.end, s.initial, s.power, s.frequency) == (0, 40, 0.0, 3.0, 100)
    assert [t for t in range(100) if s.updates_at(t)] == [0, 40]


def test_build_polynomial_too_short_window_still_has_one_step():
    # 1 step per epoch: start 0.2 -> step 0, end 0.4 -> step 0; the window is kept to 0..1
    s = schedules.build("polynomial", 0.5, Plan(1, 2, start_epoch=0.2, end_epoch=0.4))
    assert (s.begin, s.end) == (0, 1)
    assert s.sparsity_at(1) == 0.5


def test_build_unknown_kind_lists_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown schedule 'cubic'; valid: one_shot, constant, "
        r"polynomial, iterative",
    ):
        schedules.build("cubic", 0.5, Plan(10, 10))


def test_build_checks_its_arguments():
    with pytest.raises(ValueError, match="final sparsity"):
        schedules.build("polynomial", 1.0, Plan(10, 10))
    with pytest.raises(ValueError, match="final sparsity"):
        schedules.build("constant", 1.5, Plan(10, 10))


# --- iterative: prune-retrain rounds ------------------------------------------------------


def test_iterative_rounds_remove_the_same_fraction_of_survivors_each_time():
    s = schedules.build("iterative", 0.875, Plan(10, 30, rounds=3))
    assert s == Iterative(final=0.875, rounds=3, total=30)
    assert [t for t in range(40) if s.updates_at(t)] == [0, 10, 20]
    # density 0.125 ** (k/3): 0.5, 0.25, 0.125
    assert [s.sparsity_at(t) for t in (0, 9, 10, 19, 20, 29)] == pytest.approx(
        [0.5, 0.5, 0.75, 0.75, 0.875, 0.875]
    )
    assert s.sparsity_at(10**9) == pytest.approx(0.875)


def test_iterative_single_round_is_one_shot_at_step_zero():
    s = Iterative(final=0.6, rounds=1, total=7)
    assert [t for t in range(10) if s.updates_at(t)] == [0]
    assert s.sparsity_at(0) == pytest.approx(0.6)


def test_iterative_checks_its_arguments():
    with pytest.raises(ValueError, match="rounds >= 1"):
        Iterative(final=0.5, rounds=0, total=10)
