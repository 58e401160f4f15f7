"""scoring.py: the score registry and the magnitude score, on arrays small enough to check."""

from __future__ import annotations

import numpy as np
import pytest

from prunecli.core import scoring
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
