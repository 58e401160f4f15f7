"""core/granularity.py: ``prune.granularity`` parsed once into a ``Pattern``, and what each
pattern refuses for a kernel shape."""

from __future__ import annotations

import pytest

from prunecli import config
from prunecli.core.granularity import Pattern, parse_granularity

NM_2_4 = Pattern("nm", n=2, m=4)


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
