"""scoring.py: the score registry and every score, on arrays small enough to check by hand.

Every expected array is worked out in the comment beside it, so a change in a score or a tie
rule fails loudly. No TensorFlow: the file runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from prunecli.core import masking, scoring
from prunecli.core.scoring import ScoreContext


def test_magnitude_is_absolute_value_with_the_same_shape():
    weights = np.array([[0.5, -2.0, 0.0], [-0.25, 1.0, -1.0]], dtype=np.float32)
    scores = scoring.magnitude(weights, ScoreContext())
    np.testing.assert_array_equal(
        scores, np.array([[0.5, 2.0, 0.0], [0.25, 1.0, 1.0]], dtype=np.float32)
    )
    assert scores.shape == weights.shape


def test_magnitude_keeps_conv_kernel_shape_and_does_not_touch_the_input():
    weights = -np.arange(24, dtype=np.float32).reshape(2, 2, 3, 2)
    before = weights.copy()
    scores = scoring.magnitude(weights, ScoreContext(seed=3, key="conv/kernel"))
    assert scores.shape == (2, 2, 3, 2)
    np.testing.assert_array_equal(scores, np.arange(24, dtype=np.float32).reshape(2, 2, 3, 2))
    np.testing.assert_array_equal(weights, before)


def test_magnitude_ignores_the_context():
    weights = np.array([1.0, -3.0])
    np.testing.assert_array_equal(
        scoring.magnitude(weights, ScoreContext(seed=0, key="a")),
        scoring.magnitude(weights, ScoreContext(seed=99, key="b")),
    )


def test_get_resolves_a_registered_name():
    assert scoring.get("magnitude") is scoring.magnitude
    assert scoring.REGISTRY["magnitude"] is scoring.magnitude


def test_get_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError) as info:
        scoring.get("snip")
    message = str(info.value)
    assert "'snip'" in message
    assert "valid: lamp, magnitude, movement, random, taylor" in message


# --- random --------------------------------------------------------------------------------


def test_random_is_seeded_by_seed_and_key():
    weights = np.arange(1.0, 25.0).reshape(2, 3, 4)
    first = scoring.random(weights, ScoreContext(seed=7, key="conv/kernel"))
    again = scoring.random(weights.copy(), ScoreContext(seed=7, key="conv/kernel"))
    np.testing.assert_array_equal(first, again)
    assert first.shape == weights.shape
    assert not np.array_equal(first, scoring.random(weights, ScoreContext(8, "conv/kernel")))
    assert not np.array_equal(first, scoring.random(weights, ScoreContext(7, "dense/kernel")))
    # scores do not depend on the weights' values, only on seed, key and shape
    np.testing.assert_array_equal(first, scoring.random(-weights, ScoreContext(7, "conv/kernel")))


def test_random_puts_already_zero_weights_lowest():
    weights = np.array([[0.0, 3.0, 0.0], [-1.0, 0.0, 2.0]])
    scores = scoring.random(weights, ScoreContext(seed=1, key="k"))
    pruned = weights == 0
    np.testing.assert_array_equal(scores[pruned], [-1.0, -1.0, -1.0])
    assert scores[~pruned].min() >= 0.0
    # so a rising schedule only grows the mask: at 3/6 the three zeros are the ones cut
    np.testing.assert_array_equal(masking.unstructured(scores, 0.5), ~pruned)


# --- taylor --------------------------------------------------------------------------------


def test_taylor_is_abs_weight_times_summed_abs_gradient():
    weights = np.array([[-2.0, 0.5], [1.0, -3.0]])
    abs_gradient = np.array([[0.1, 4.0], [0.0, 1.0]])
    scores = scoring.taylor(weights, ScoreContext(abs_gradient=abs_gradient))
    np.testing.assert_allclose(scores, [[0.2, 2.0], [0.0, 3.0]])
    # the order differs from magnitude's: 0.5 (big gradient) outranks -2.0
    np.testing.assert_array_equal(masking.unstructured(scores, 0.5), [[0, 1], [0, 1]])
    np.testing.assert_array_equal(
        masking.unstructured(scoring.magnitude(weights, ScoreContext()), 0.5), [[1, 0], [0, 1]]
    )


def test_taylor_puts_pruned_weights_below_live_ones_without_gradient():
    # weights 1 and 2 get no gradient (a dead ReLU behind them): they score 0, and the
    # pruned weights (0.0) score -1, so a rising mask cuts the live weights only after them
    weights = np.array([0.0, 1.0, 0.0, 2.0, 3.0, 0.0])
    abs_gradient = np.array([0.5, 0.0, 0.5, 0.0, 1.0, 0.5])
    scores = scoring.taylor(weights, ScoreContext(abs_gradient=abs_gradient))
    np.testing.assert_array_equal(scores, [-1.0, 0.0, -1.0, 0.0, 3.0, -1.0])
    # 4 of 6: the three zeros, then the first tie at 0 is kept (weight 1.0), 2.0 goes
    np.testing.assert_array_equal(masking.unstructured(scores, 4 / 6), [0, 1, 0, 0, 1, 0])
    assert np.count_nonzero(weights * masking.unstructured(scores, 4 / 6)) == 2


def test_taylor_without_gradients_says_so():
    with pytest.raises(ValueError, match="taylor needs gradients"):
        scoring.taylor(np.ones(3), ScoreContext())


# --- lamp ----------------------------------------------------------------------------------


def test_lamp_worked_by_hand():
    # squares 1, 4, 9: 1 / (1 + 4 + 9), 4 / (4 + 9), 9 / 9
    scores = scoring.lamp(np.array([1.0, -2.0, 3.0]), ScoreContext())
    np.testing.assert_allclose(scores, [1 / 14, 4 / 13, 1.0])


def test_lamp_keeps_shape_and_order_within_a_kernel():
    # a 2x2 kernel, |w| = 3, 1, 4, 2: squares 9, 1, 16, 4 sorted 1, 4, 9, 16 (sum 30)
    weights = np.array([[3.0, -1.0], [4.0, 2.0]])
    scores = scoring.lamp(weights, ScoreContext())
    expected = np.array([[9 / 25, 1 / 30], [16 / 16, 4 / 29]])
    np.testing.assert_allclose(scores, expected)
    # within one kernel LAMP ranks exactly as magnitude does
    np.testing.assert_array_equal(
        masking.unstructured(scores, 0.5), masking.unstructured(np.abs(weights), 0.5)
    )


def test_lamp_gives_every_kernel_a_top_score_of_one():
    big = np.array([10.0, 20.0, 30.0, 40.0])
    small = np.array([0.01, 0.011])
    assert scoring.lamp(big, ScoreContext()).max() == 1.0
    assert scoring.lamp(small, ScoreContext()).max() == 1.0
    # so a global threshold cannot wipe out the small kernel as magnitude does
    magnitude = masking.global_masks({"big": big, "small": small}, 0.5, 0.01)
    lamp = masking.global_masks(
        {"big": scoring.lamp(big, ScoreContext()), "small": scoring.lamp(small, ScoreContext())},
        0.5,
        0.01,
    )
    # keep 3 of 6; floors of 1 each. Magnitude's third is big's 30; LAMP's is small's
    # 0.01 (1e-4 / 2.21e-4 = 0.45 beats big's 30: 900 / 2500 = 0.36)
    np.testing.assert_array_equal(magnitude["small"], [0, 1])
    np.testing.assert_array_equal(magnitude["big"], [0, 0, 1, 1])
    np.testing.assert_array_equal(lamp["small"], [1, 1])
    np.testing.assert_array_equal(lamp["big"], [0, 0, 0, 1])


def test_lamp_on_an_all_zero_kernel_is_zero_not_nan():
    scores = scoring.lamp(np.zeros((2, 2)), ScoreContext())
    np.testing.assert_array_equal(scores, np.zeros((2, 2)))


# --- movement ------------------------------------------------------------------------------


def test_movement_uses_the_context_not_the_weights():
    weights = np.array([[1.0, -5.0], [-1.0, 2.0]])
    moved = np.array([[0.3, -0.2], [0.5, 0.1]])
    scores = scoring.movement(weights, ScoreContext(movement=moved))
    np.testing.assert_array_equal(scores, moved)
    # the biggest weights (-5, 2) moved least toward keeping: they go first
    np.testing.assert_array_equal(masking.unstructured(scores, 0.5), [[1, 0], [1, 0]])


def test_movement_lets_a_pruned_weight_come_back_when_it_moved_most():
    # Sanh et al.: pruned weights keep accumulating movement (straight-through), so the
    # score is the accumulated movement as is, and a pruned weight (0.0) can win back.
    weights = np.array([[1.0, 0.0], [-1.0, 2.0]])
    moved = np.array([[0.3, 5.0], [-0.5, 0.1]])
    scores = scoring.movement(weights, ScoreContext(movement=moved))
    np.testing.assert_array_equal(scores, moved)
    np.testing.assert_array_equal(masking.unstructured(scores, 0.25), [[1, 1], [0, 1]])


def test_movement_without_statistics_says_so():
    with pytest.raises(ValueError, match="movement needs fine-tuning statistics"):
        scoring.movement(np.ones(3), ScoreContext())


@pytest.mark.parametrize("name", ["magnitude", "random", "taylor", "lamp", "movement"])
def test_every_score_keeps_the_kernel_shape(name):
    weights = np.random.default_rng(0).normal(size=(3, 3, 4, 8))
    context = ScoreContext(
        seed=0, key="conv/kernel", abs_gradient=np.ones_like(weights), movement=weights.copy()
    )
    scores = scoring.get(name)(weights, context)
    assert scores.shape == weights.shape
    assert np.all(np.isfinite(scores))
