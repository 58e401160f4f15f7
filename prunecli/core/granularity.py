"""``prune.granularity`` parsed once, into a ``Pattern`` every stage shares.

Three shapes of pruning unit: ``unstructured`` (one weight), ``"N:M"`` (N of every M
consecutive weights along the kernel's reduction axis survive: ``"2:4"`` keeps 2 of each 4
input weights of a Dense kernel ``(in, out)``, so its sparsity is fixed at 0.5) and
``{block: [rows, cols]}`` (whole ``rows x cols`` tiles over the kernel's last two axes).

Pure Python, no numpy: ``config`` validates with it, and ``validate`` must start fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

_NM = re.compile(r"(\d+):(\d+)")


@dataclass(frozen=True)
class Pattern:
    """A parsed granularity: ``kind`` is unstructured, nm or block."""

    kind: Literal["unstructured", "nm", "block"] = "unstructured"
    n: int = 0
    m: int = 0
    block: tuple[int, int] = (1, 1)

    @property
    def fixed_sparsity(self) -> float | None:
        """N:M fixes each layer's sparsity at 1 - N/M; other patterns take any target."""
        return 1.0 - self.n / self.m if self.kind == "nm" else None

    @property
    def checks_layout(self) -> bool:
        """Whether a kernel's zeros must follow a layout (N:M groups, blocks) to be right."""
        return self.kind != "unstructured"

    def unsupported(self, shape: tuple[int, ...], axis: int | None) -> str | None:
        """Why this pattern cannot apply to a kernel of ``shape`` (None when it can)."""
        if self.kind == "nm":
            if axis is None:
                return f"{self.n}:{self.m} needs a reduction axis; this kernel has none"
            if shape[axis] % self.m:
                return (
                    f"{self.n}:{self.m} needs the reduction dimension ({shape[axis]}) to be "
                    f"divisible by {self.m}"
                )
        if self.kind == "block" and len(shape) < 2:
            return "block patterns need a kernel with at least 2 axes"
        return None


def parse_granularity(granularity: Any) -> Pattern:
    """``"unstructured"``, ``"2:4"`` or ``{"block": [1, 4]}`` (a dict or the config's Block
    model) -> Pattern. Raises ValueError, with what is allowed, for anything else."""
    block = granularity.get("block") if isinstance(granularity, Mapping) else None
    block = getattr(granularity, "block", block)  # the config's Block model
    if block is not None:
        rows, cols = block
        if min(int(rows), int(cols)) < 1:
            raise ValueError(f"both sides must be >= 1, got {[rows, cols]}")
        return Pattern("block", block=(int(rows), int(cols)))
    if granularity == "unstructured":
        return Pattern()
    found = _NM.fullmatch(str(granularity))
    if not found or not 0 < int(found[1]) < int(found[2]):
        raise ValueError(
            f'must be unstructured, channel, "N:M" with 0 < N < M such as "2:4", or '
            f"{{block: [rows, cols]}}, got {granularity!r}"
        )
    return Pattern("nm", n=int(found[1]), m=int(found[2]))


UNSTRUCTURED = Pattern()
