"""masking.py: scores -> binary masks, checked against masks worked out by hand."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from prunecli.core import masking
from prunecli.core.granularity import Pattern

NM_2_4 = Pattern("nm", n=2, m=4)

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


# --- N:M -----------------------------------------------------------------------------------


def test_n_of_m_dense_kernel_groups_run_down_each_column():
    # Dense (in=8, out=2): column 0 holds groups (4, 1, 3, 2) and (.5, .9, .1, .7)
    scores = np.array(
        [[4.0, 1.0], [1.0, 2.0], [3.0, 3.0], [2.0, 4.0],
         [0.5, 8.0], [0.9, 7.0], [0.1, 6.0], [0.7, 5.0]]
    )  # fmt: skip
    mask = masking.n_of_m(scores, 0.5, 4, axis=0)
    expected = np.array(
        [[1, 0], [0, 0], [1, 1], [0, 1],
         [0, 1], [1, 1], [0, 0], [1, 0]], dtype=np.float32
    )  # fmt: skip
    np.testing.assert_array_equal(mask, expected)
    counts = np.count_nonzero(mask.reshape(2, 4, 2), axis=1)
    np.testing.assert_array_equal(counts, [[2, 2], [2, 2]])


def test_n_of_m_conv_kernel_groups_along_input_channels_at_each_position():
    # Conv2D (kh=1, kw=2, in=4, out=2); scores[0, x, :, o] is one group of 4 input channels
    scores = np.zeros((1, 2, 4, 2))
    scores[0, 0, :, 0] = [1, 2, 3, 4]  # keep channels 2, 3
    scores[0, 0, :, 1] = [5, 1, 1, 5]  # keep 0, 3
    scores[0, 1, :, 0] = [2, 8, 6, 4]  # keep 1, 2
    scores[0, 1, :, 1] = [7, 3, 5, 1]  # keep 0, 2
    mask = masking.n_of_m(scores, 0.5, 4, axis=-2)
    np.testing.assert_array_equal(mask[0, 0, :, 0], [0, 0, 1, 1])
    np.testing.assert_array_equal(mask[0, 0, :, 1], [1, 0, 0, 1])
    np.testing.assert_array_equal(mask[0, 1, :, 0], [0, 1, 1, 0])
    np.testing.assert_array_equal(mask[0, 1, :, 1], [1, 0, 1, 0])
    np.testing.assert_array_equal(np.count_nonzero(mask, axis=2), np.full((1, 2, 2), 2))
    assert masking.pattern_ok(mask, NM_2_4, -2) is True


def test_n_of_m_exact_count_per_group_on_a_random_conv_kernel():
    scores = np.random.default_rng(3).random((3, 3, 16, 8))
    mask = masking.layer_mask(scores, 0.5, NM_2_4, axis=-2)
    groups = np.moveaxis(mask, 2, -1).reshape(3, 3, 8, 4, 4)
    assert np.all(np.count_nonzero(groups, axis=-1) == 2)
    assert masking.sparsity(mask) == 0.5


def test_n_of_m_rises_gradually_one_per_group_at_a_quarter():
    scores = np.array([[4.0], [1.0], [3.0], [2.0], [8.0], [6.0], [7.0], [5.0]])
    quarter = masking.layer_mask(scores, 0.25, NM_2_4, axis=-2)
    np.testing.assert_array_equal(quarter.ravel(), [1, 0, 1, 1, 1, 1, 1, 0])
    # a polynomial schedule's 0.37 rounds to 1 of 4 too; the final 0.5 to 2 of 4
    np.testing.assert_array_equal(masking.layer_mask(scores, 0.37, NM_2_4, -2), quarter)
    half = masking.layer_mask(scores, 0.5, NM_2_4, axis=-2)
    np.testing.assert_array_equal(half.ravel(), [1, 0, 1, 0, 1, 0, 1, 0])
    assert np.all(half <= quarter)  # the mask only grows


def test_n_of_m_on_the_last_axis_for_transposed_convs():
    # Conv2DTranspose kernels are (kh, kw, out, in): the reduction axis is -1
    scores = np.arange(16.0).reshape(1, 1, 2, 8)
    mask = masking.layer_mask(scores, 0.5, NM_2_4, axis=-1)
    np.testing.assert_array_equal(mask[0, 0], [[0, 0, 1, 1, 0, 0, 1, 1]] * 2)


# --- blocks --------------------------------------------------------------------------------


def test_block_scores_with_partial_edge_blocks():
    # 3x5 in 2x2 blocks: rows {0,1},{2}; columns {0,1},{2,3},{4}
    #  0  1 |  2  3 |  4
    #  5  6 |  7  8 |  9
    # 10 11 | 12 13 | 14
    scores = np.arange(15.0).reshape(3, 5)
    units = masking.block_scores(scores, (2, 2))
    np.testing.assert_allclose(units, [[3.0, 5.0, 6.5], [10.5, 12.5, 14.0]])


def test_block_scores_keep_leading_axes_of_a_conv_kernel():
    # Conv2D (kh=2, kw=1, in=2, out=4) in 1x2 blocks over (in, out) at each position
    scores = np.arange(16.0).reshape(2, 1, 2, 4)
    units = masking.block_scores(scores, (1, 2))
    assert units.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(units[0, 0], [[0.5, 2.5], [4.5, 6.5]])
    np.testing.assert_allclose(units[1, 0], [[8.5, 10.5], [12.5, 14.5]])


def test_expand_blocks_crops_the_edge():
    units = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    mask = masking.expand_blocks(units, (2, 2), (3, 5))
    expected = [[1, 1, 0, 0, 1], [1, 1, 0, 0, 1], [0, 0, 1, 1, 0]]
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == np.float32


def test_block_layer_mask_prunes_whole_blocks():
    # block means (3, 5, 6.5 / 10.5, 12.5, 14): half of the 6 blocks, the 3 lowest, go
    scores = np.arange(15.0).reshape(3, 5)
    mask = masking.layer_mask(scores, 0.5, Pattern("block", block=(2, 2)), axis=-2)
    np.testing.assert_array_equal(mask, [[0] * 5, [0] * 5, [1] * 5])
    # 1x4 blocks on a Dense (2, 8): block means 1.5, 5.5 / 9.5, 13.5; a quarter is 1 block
    dense = masking.layer_mask(
        np.arange(16.0).reshape(2, 8), 0.25, Pattern("block", block=(1, 4)), axis=-2
    )
    np.testing.assert_array_equal(dense, [[0, 0, 0, 0, 1, 1, 1, 1], [1] * 8])


def test_global_pattern_masks_let_blocks_compete_as_units():
    # a (2, 4) kernel: 1x2 block means 1, 5 / 2, 8;  b (2, 2): 3 / 0.
    a = np.array([[1.0, 1.0, 5.0, 5.0], [2.0, 2.0, 8.0, 8.0]])
    b = np.array([[3.0, 3.0], [0.0, 0.0]])
    masks = masking.global_pattern_masks(
        {"a": a, "b": b}, 0.5, 0.01, Pattern("block", block=(1, 2))
    )
    # 6 units, keep 3: floors keep a's 8 and b's 3, the budget's last unit is a's 5
    np.testing.assert_array_equal(masks["a"], [[0, 0, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(masks["b"], [[1, 1], [0, 0]])
    assert masking.pattern_ok(a * masks["a"], Pattern("block", block=(1, 2)), -2) is True


def test_global_pattern_masks_unstructured_is_global_masks():
    scores = {"a": np.arange(8.0).reshape(2, 4), "b": np.arange(4.0)}
    got = masking.global_pattern_masks(scores, 0.5, 0.25, Pattern())
    want = masking.global_masks(scores, 0.5, 0.25)
    for key in scores:
        np.testing.assert_array_equal(got[key], want[key])


# --- pattern_ok and unsupported ------------------------------------------------------------


def test_pattern_ok_n_of_m():
    good = np.array([[1.0], [0.0], [2.0], [0.0], [0.0], [3.0], [0.0], [4.0]])
    assert masking.pattern_ok(good, NM_2_4, -2) is True
    assert masking.pattern_ok(np.zeros((8, 1)), NM_2_4, -2) is True  # fewer is allowed
    three = good.copy()
    three[1] = 5.0
    assert masking.pattern_ok(three, NM_2_4, -2) is False
    assert masking.pattern_ok(np.ones((8, 3)), NM_2_4, -2) is False


def test_pattern_ok_blocks():
    pattern = Pattern("block", block=(1, 4))
    kernel = np.ones((2, 8))
    kernel[0, 4:] = 0.0  # one whole block
    assert masking.pattern_ok(kernel, pattern, -2) is True
    kernel[1, 1] = 0.0  # a stray zero inside a kept block
    assert masking.pattern_ok(kernel, pattern, -2) is False
    assert masking.pattern_ok(np.ones((2, 8)), pattern, -2) is True


def test_pattern_ok_is_none_for_unstructured():
    assert masking.pattern_ok(np.zeros((4, 4)), Pattern(), -2) is None


def _sorted_global_masks(scores, sparsity, min_density):
    """An independent reference: stable sorts, each kernel's floor first, then the pool in
    (kernel, position) order with ties to the earlier entry (the documented rule)."""
    keep = {key: np.zeros(s.size, dtype=bool) for key, s in scores.items()}
    total = sum(s.size for s in scores.values())
    budget = total - round(sparsity * total)
    for key, s in scores.items():
        order = np.argsort(-s.reshape(-1), kind="stable")
        keep[key][order[: math.ceil(min_density * s.size)]] = True
        budget -= int(keep[key].sum())
    pool = [(-float(v), k, i) for k, (key, s) in enumerate(scores.items())
            for i, v in enumerate(s.reshape(-1)) if not keep[key][i]]  # fmt: skip
    keys = list(scores)
    for _, k, i in sorted(pool)[: max(budget, 0)]:
        keep[keys[k]][i] = True
    return {key: keep[key].reshape(s.shape).astype(np.float32) for key, s in scores.items()}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.97])
def test_global_masks_equal_a_sorted_reference_with_many_ties(seed, sparsity):
    rng = np.random.default_rng(seed)
    # few distinct values (ties everywhere), some kernels already mostly zero
    shapes = [(3, 3, 2, 4), (16, 8), (5,), (4, 4, 4, 2)]
    scores = {
        f"k{i}": rng.integers(0, 4, shape).astype(np.float32) for i, shape in enumerate(shapes)
    }
    scores["k1"][:12] = 0.0
    got = masking.global_masks(scores, sparsity, min_density=0.1)
    want = _sorted_global_masks(scores, sparsity, 0.1)
    for key in scores:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        assert got[key].dtype == np.float32
    assert all(np.array_equal(s, scores[k]) for k, s in scores.items())  # inputs untouched


@pytest.mark.parametrize("zeros", [0.0, 0.5, 0.7, 0.95])
@pytest.mark.parametrize("sparsity", [0.3, 0.7, 0.8, 0.99])
def test_unstructured_on_large_kernels_with_ties_equals_a_stable_sort(zeros, sparsity):
    # large enough for the sampled bracket (a re-masked kernel: many scores tied at 0)
    rng = np.random.default_rng(round(100 * zeros + sparsity * 10))
    scores = np.abs(rng.standard_normal((64, 40, 50))).astype(np.float32)
    scores[rng.random(scores.shape) < zeros] = 0.0
    scores[:, :, :5] = 1.0  # another tie block, inside the scores' range
    flat = scores.reshape(-1)
    keep = flat.size - round(sparsity * flat.size)
    expected = np.zeros(flat.size, dtype=np.float32)
    expected[np.argsort(-flat, kind="stable")[:keep]] = 1.0  # ties: earlier index kept
    np.testing.assert_array_equal(masking.unstructured(scores, sparsity).reshape(-1), expected)
