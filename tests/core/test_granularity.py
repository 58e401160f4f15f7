"""Issue 6's methods, unit by unit: scores, N:M and block patterns, and the config checks.

Every expected array here is worked out by hand in the comment beside it, so a change in a
score, a grouping axis or a tie rule fails loudly. No TensorFlow: the file runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_config

from prunecli import config
from prunecli.core import masking, scoring
from prunecli.core.granularity import Pattern, parse_granularity
from prunecli.core.scoring import ScoreContext
from prunecli.errors import ConfigError

NM_2_4 = Pattern("nm", n=2, m=4)


def config_error(overrides: dict, path=None) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(path, overrides)
    return str(info.value)


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


@pytest.mark.parametrize(
    ("shape", "pattern", "axis", "expected"),
    [
        ((3, 3, 16, 8), NM_2_4, -2, None),
        ((3, 3, 6, 8), NM_2_4, -2,
         "2:4 needs the reduction dimension (6) to be divisible by 4"),
        ((100, 16), NM_2_4, None, "2:4 needs a reduction axis; this kernel has none"),
        ((3, 3, 8, 6), Pattern("nm", n=1, m=8), -1,
         "1:8 needs the reduction dimension (6) to be divisible by 8"),
        ((8,), Pattern("block", block=(1, 4)), None,
         "block patterns need a kernel with at least 2 axes"),
        ((3, 5), Pattern("block", block=(4, 4)), -2, None),  # partial blocks are fine
        ((3, 3, 6, 8), Pattern(), -2, None),
        ((100, 16), Pattern(), None, None),
    ],
    ids=["nm-ok", "nm-indivisible", "nm-no-axis", "nm-transposed", "block-1d", "block-ok",
         "unstructured", "unstructured-no-axis"],
)  # fmt: skip
def test_unsupported_messages(shape, pattern, axis, expected):
    assert pattern.unsupported(shape, axis) == expected


@pytest.mark.parametrize(
    ("granularity", "expected", "fixed"),
    [
        ("unstructured", Pattern(), None),
        ("2:4", NM_2_4, 0.5),
        ("1:8", Pattern("nm", n=1, m=8), 0.875),
        ({"block": [1, 4]}, Pattern("block", block=(1, 4)), None),
        (config.Block(block=(4, 1)), Pattern("block", block=(4, 1)), None),
    ],
)
def test_parse(granularity, expected, fixed):
    assert parse_granularity(granularity) == expected
    assert parse_granularity(granularity).fixed_sparsity == fixed


# --- config validation ---------------------------------------------------------------------


def test_nm_with_a_disagreeing_sparsity_names_both_keys():
    message = config_error({"prune.granularity": "2:4", "prune.sparsity": 0.8})
    assert "prune.sparsity (0.8)" in message
    assert "prune.granularity '2:4'" in message
    assert "0.5" in message


def test_nm_without_sparsity_sets_it():
    assert config.load(None, {"prune.granularity": "2:4"}).prune.sparsity == 0.5
    assert config.load(None, {"prune.granularity": "1:4"}).prune.sparsity == 0.75
    # an explicit sparsity that agrees is fine
    assert config.load(None, {"prune.granularity": "2:4", "prune.sparsity": 0.5}).prune


def test_nm_with_global_scope_is_refused():
    message = config_error({"prune.granularity": "2:4", "prune.scope": "global"})
    assert "prune.scope global" in message and "prune.granularity '2:4'" in message


@pytest.mark.parametrize("schedule", ["one_shot", "constant"])
def test_movement_needs_a_gradual_schedule(schedule):
    message = config_error({"prune.method": "movement", "prune.schedule.type": schedule})
    assert "prune.schedule.type" in message
    assert repr(schedule) in message


def test_movement_with_its_default_schedule_is_refused():
    assert "prune.schedule.type" in config_error({"prune.method": "movement"})


def test_movement_needs_fine_tuning():
    message = config_error(
        {"prune.method": "movement", "prune.schedule.type": "iterative", "finetune.epochs": 0}
    )
    assert "finetune.epochs must be > 0" in message


@pytest.mark.parametrize("kind", ["polynomial", "iterative"])
def test_movement_with_a_gradual_schedule_is_valid(kind):
    overrides = {"prune.method": "movement", "prune.schedule.type": kind}
    assert config.load(None, overrides).prune.method == "movement"


def test_unquoted_nm_in_yaml_gives_the_quoting_hint(tmp_path):
    path = write_config(tmp_path / "cfg.yaml", "prune:\n  granularity: 2:4\n")
    message = config_error({}, path)
    assert message.startswith(f"{path}: prune.granularity: ")
    assert 'write N:M in quotes, e.g. "2:4"' in message
    assert "124" in message


def test_quoted_nm_in_yaml_is_fine(tmp_path):
    path = write_config(tmp_path / "cfg.yaml", "prune:\n  granularity: '2:4'\n")
    assert config.load(path).prune.granularity == "2:4"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"block": [0, 4]}, "both sides must be >= 1, got [0, 4]"),
        ({"block": [1]}, "prune.granularity: {block: [rows, cols]}"),
        ({"block": [1, 4], "size": 2}, "prune.granularity: {block: [rows, cols]}"),
        ("4:2", 'must be unstructured, "N:M" with 0 < N < M'),
        ("0:4", "got '0:4'"),
        ("structured", "got 'structured'"),
    ],
    ids=["zero-side", "one-side", "extra-key", "n-above-m", "n-zero", "unknown-word"],
)
def test_bad_granularity_is_refused(value, fragment):
    message = config_error({"prune.granularity": value})
    assert message.startswith("prune.granularity: ")
    assert fragment in message


def test_block_granularity_round_trips():
    cfg = config.load(None, {"prune.granularity": {"block": [4, 1]}, "prune.sparsity": 0.7})
    assert cfg.prune.granularity == config.Block(block=(4, 1))
    assert parse_granularity(cfg.prune.granularity) == Pattern("block", block=(4, 1))
    assert "block:\n    - 4\n    - 1" in config.dump(cfg)


def test_overrides_with_global_scope_are_refused():
    message = config_error({"prune.scope": "global", "prune.layers.overrides": {"dense.*": 0.3}})
    assert "prune.layers.overrides" in message and "prune.scope layer" in message


def test_score_batches_and_iterative_steps_are_checked():
    assert "prune.score_batches" in config_error({"prune.score_batches": 0})
    assert "prune.schedule.steps" in config_error({"prune.schedule.steps": 0})
    cfg = config.load(None, {"prune.method": "taylor"})
    assert cfg.prune.score_batches == 16


def test_distill_settings_are_checked():
    cfg = config.load(None, {"finetune.distill": {}})
    assert cfg.finetune.distill == config.Distill(alpha=0.5, temperature=4.0)
    assert config.load(None, {}).finetune.distill is None
    assert "finetune.distill.alpha" in config_error({"finetune.distill": {"alpha": 1.5}})
    assert "finetune.distill.temperature" in config_error({"finetune.distill": {"temperature": 0}})
