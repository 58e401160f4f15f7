"""masking.py: scores -> binary masks, checked against masks worked out by hand."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from prunecli.core import masking

# --- unstructured (one kernel) -----------------------------------------------------------


def test_unstructured_zeroes_the_lowest_scores():
    scores = np.array([[0.1, 3.0], [2.0, 0.5]])
    mask = masking.unstructured(scores, 0.5)
    np.testing.assert_array_equal(mask, [[0.0, 1.0], [1.0, 0.0]])
    assert mask.dtype == np.float32
    assert mask.shape == scores.shape


def test_unstructured_on_a_conv_shaped_kernel():
    # kernel (kh=1, kw=2, in=2, out=2): flat scores 0..7 in C order; 0.75 of 8 = 6 pruned
    scores = np.array([5.0, 1.0, 7.0, 0.0, 2.0, 6.0, 3.0, 4.0]).reshape(1, 2, 2, 2)
    mask = masking.unstructured(scores, 0.75)
    expected = np.array([0, 0, 1, 0, 0, 1, 0, 0], dtype=np.float32).reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("n", [1, 3, 7, 10, 36, 100, 2304])
@pytest.mark.parametrize("sparsity", [0.1, 0.25, 0.3, 0.5, 0.7, 0.8, 0.9, 0.99])
def test_unstructured_prunes_exactly_round_s_times_n(n, sparsity):
    scores = np.random.default_rng(n).random(n).astype(np.float32)
    mask = masking.unstructured(scores, sparsity)
    assert int(np.sum(mask == 0)) == round(sparsity * n)
    assert int(np.sum(mask == 1)) == n - round(sparsity * n)
    # and they are the lowest ones: every pruned score is below every kept one
    if 0 < np.sum(mask == 0) < n:
        assert scores[mask == 0].max() < scores[mask == 1].min()


def test_unstructured_exact_counts_hand_examples():
    # 0.3 * 10 = 3.0000000000000004 -> 3; 0.29 * 100 = 28.999999999999996 -> 29
    assert np.sum(masking.unstructured(np.arange(10.0), 0.3) == 0) == 3
    np.testing.assert_array_equal(
        masking.unstructured(np.arange(10.0), 0.3), [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    )
    assert np.sum(masking.unstructured(np.arange(100.0), 0.29) == 0) == 29
    # 0.99 of a 3x3x1x4 conv kernel (36 weights): round(35.64) = 36, everything pruned
    assert np.sum(masking.unstructured(np.arange(36.0).reshape(3, 3, 1, 4), 0.99)) == 0


def test_unstructured_ties_are_broken_by_position_earlier_kept():
    np.testing.assert_array_equal(masking.unstructured(np.ones(6), 0.5), [1, 1, 1, 0, 0, 0])
    # three weights tie at 2.0 for the two places left after 5.0: the first two win
    scores = np.array([2.0, 5.0, 2.0, 1.0, 2.0])
    np.testing.assert_array_equal(masking.unstructured(scores, 0.4), [1, 1, 1, 0, 0])
    # already-zero weights: the later zeros are pruned first
    zeros = np.array([0.0, 0.0, 0.0, 0.0, 3.0])
    np.testing.assert_array_equal(masking.unstructured(zeros, 0.6), [1, 0, 0, 0, 1])


def test_unstructured_is_deterministic_on_ties():
    scores = np.zeros((4, 4))
    first = masking.unstructured(scores, 0.5)
    np.testing.assert_array_equal(first, masking.unstructured(scores.copy(), 0.5))
    np.testing.assert_array_equal(first.reshape(-1), [1] * 8 + [0] * 8)


def test_sparsity_zero_keeps_everything_even_zero_scores():
    scores = np.array([[0.0, 1.0], [0.0, -0.0]])
    mask = masking.unstructured(scores, 0.0)
    np.testing.assert_array_equal(mask, np.ones((2, 2)))
    assert mask.dtype == np.float32


# --- layer_masks -------------------------------------------------------------------------


def test_layer_masks_uses_each_keys_own_target():
    scores = {
        "conv/kernel": np.array([4.0, 3.0, 2.0, 1.0]),
        "hidden/kernel": np.array([[0.1, 0.9], [0.5, 0.3]]),
        "out/kernel": np.array([1.0, 2.0, 3.0]),
    }
    targets = {"conv/kernel": 0.25, "hidden/kernel": 0.5, "out/kernel": 0.0}
    masks = masking.layer_masks(scores, targets)
    assert list(masks) == ["conv/kernel", "hidden/kernel", "out/kernel"]
    np.testing.assert_array_equal(masks["conv/kernel"], [1, 1, 1, 0])
    np.testing.assert_array_equal(masks["hidden/kernel"], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(masks["out/kernel"], [1, 1, 1])


def test_layer_masks_missing_target_is_a_key_error():
    with pytest.raises(KeyError):
        masking.layer_masks({"a": np.ones(3)}, {"b": 0.5})


# --- global_masks ------------------------------------------------------------------------


def test_global_masks_one_threshold_across_kernels():
    # all ten scores: 0.9 0.8 0.7 0.6 0.5 | 0.4 0.3 0.2 0.1 0.05 -> keep the top five;
    # the floor (ceil(0.01 * n) = 1 per kernel) is already met by each kernel's best weight
    scores = {
        "a": np.array([0.1, 0.5, 0.9, 0.3]),
        "b": np.array([0.2, 0.8, 0.05, 0.6, 0.4, 0.7]),
    }
    masks = masking.global_masks(scores, 0.5, min_density=0.01)
    np.testing.assert_array_equal(masks["a"], [0, 1, 1, 0])
    np.testing.assert_array_equal(masks["b"], [0, 1, 0, 1, 0, 1])


def test_global_masks_differ_from_layer_masks_on_uneven_kernels():
    scores = {"big": np.array([10.0, 9.0, 8.0, 7.0]), "small": np.array([0.4, 0.3, 0.2, 0.1])}
    glob = masking.global_masks(scores, 0.5, min_density=0.25)
    # budget 4; floors keep 10.0 and 0.4; the two left go to 9.0 and 8.0
    np.testing.assert_array_equal(glob["big"], [1, 1, 1, 0])
    np.testing.assert_array_equal(glob["small"], [1, 0, 0, 0])
    layer = masking.layer_masks(scores, {"big": 0.5, "small": 0.5})
    np.testing.assert_array_equal(layer["big"], [1, 1, 0, 0])
    np.testing.assert_array_equal(layer["small"], [1, 1, 0, 0])


def test_global_masks_floor_worked_example_100_and_10_weights():
    # A holds scores 1..100, B holds 0.001..0.010: every weight of B ranks below all of A.
    # sparsity 0.8 of 110 -> keep 110 - round(88.0) = 22.
    # floor 0.1: A keeps its best ceil(10.0) = 10 (scores 91..100), B its best ceil(1.0) = 1
    # (0.010, index 9); the 11 left in the budget go to A's next best, scores 80..90.
    # Without the floor B would keep nothing and the network would be cut.
    a = np.arange(1.0, 101.0)
    b = np.arange(1.0, 11.0) / 1000
    masks = masking.global_masks({"A": a, "B": b}, 0.8, min_density=0.1)
    expected_a = np.zeros(100)
    expected_a[79:] = 1  # scores 80..100 sit at indices 79..99
    np.testing.assert_array_equal(masks["A"], expected_a)
    np.testing.assert_array_equal(masks["B"], [0] * 9 + [1])
    assert int(masks["A"].sum() + masks["B"].sum()) == 22


def test_global_masks_floor_beats_the_target_when_the_budget_is_too_small():
    # the docstring's example: sparsity 0.9 of 110 keeps 11, but the floors 0.2 alone keep
    # ceil(20) + ceil(2) = 22: the floor wins, 22 non-zeros (sparsity 0.8)
    a = np.arange(1.0, 101.0)
    b = np.arange(1.0, 11.0) / 1000
    masks = masking.global_masks({"A": a, "B": b}, 0.9, min_density=0.2)
    assert int(masks["A"].sum()) == 20
    assert int(masks["B"].sum()) == 2
    np.testing.assert_array_equal(masks["A"][80:], np.ones(20))
    np.testing.assert_array_equal(masks["B"][8:], [1, 1])


def test_global_masks_floor_rounds_up():
    # 10 weights with min_density 0.15 -> ceil(1.5) = 2 kept even at sparsity 0.99
    masks = masking.global_masks(
        {"A": np.arange(1.0, 101.0), "B": np.arange(1.0, 11.0) / 1000}, 0.99, min_density=0.15
    )
    assert int(masks["B"].sum()) == 2
    assert int(masks["A"].sum()) == 15


def test_global_masks_099_leaves_every_kernel_at_least_the_floor():
    rng = np.random.default_rng(0)
    shapes = {"conv": (3, 3, 1, 4), "hidden": (144, 16), "out": (16, 3), "tiny": (5,)}
    scales = {"conv": 1.0, "hidden": 10.0, "out": 0.01, "tiny": 0.001}
    scores = {k: np.abs(rng.normal(size=s)) * scales[k] for k, s in shapes.items()}
    floor = 0.02
    masks = masking.global_masks(scores, 0.99, min_density=floor)
    for key, mask in masks.items():
        assert mask.shape == shapes[key]
        assert mask.dtype == np.float32
        kept = int(mask.sum())
        assert kept >= math.ceil(floor * mask.size), key
        assert kept / mask.size >= floor, key
    total = sum(m.size for m in masks.values())
    kept_total = sum(int(m.sum()) for m in masks.values())
    assert kept_total == max(
        total - round(0.99 * total), sum(math.ceil(floor * m.size) for m in masks.values())
    )


def test_global_masks_exact_count_when_the_floor_is_not_binding():
    rng = np.random.default_rng(1)
    scores = {"a": rng.random((20, 10)), "b": rng.random((7, 3)), "c": rng.random(50)}
    total = 200 + 21 + 50
    for s in (0.0, 0.3, 0.5, 0.77, 0.9):
        masks = masking.global_masks(scores, s, min_density=0.02)
        assert sum(int(np.sum(m == 0)) for m in masks.values()) == round(s * total)


def test_global_masks_sparsity_zero_keeps_all():
    scores = {"a": np.zeros(4), "b": np.array([[1.0, 0.0]])}
    masks = masking.global_masks(scores, 0.0, min_density=0.5)
    np.testing.assert_array_equal(masks["a"], np.ones(4))
    np.testing.assert_array_equal(masks["b"], np.ones((1, 2)))


def test_global_masks_ties_break_by_position_and_kernel_order():
    # all scores equal; floors keep index 0 of each; 2 left in the budget of 4:
    # the pool is kernel a's rest then kernel b's rest, so a's next two win
    scores = {"a": np.ones(4), "b": np.ones(4)}
    masks = masking.global_masks(scores, 0.5, min_density=0.25)
    np.testing.assert_array_equal(masks["a"], [1, 1, 1, 0])
    np.testing.assert_array_equal(masks["b"], [1, 0, 0, 0])


# --- sparsity ----------------------------------------------------------------------------


def test_sparsity_of_a_mask():
    assert masking.sparsity(np.array([1.0, 0.0, 0.0, 1.0])) == 0.5
    assert masking.sparsity(np.zeros((2, 3))) == 1.0
    assert masking.sparsity(np.ones(7)) == 0.0
    assert masking.sparsity(np.zeros((0,))) == 0.0


def test_masking_docstring_examples_hold():
    result = doctest.testmod(masking, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
