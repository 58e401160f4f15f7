"""How much of the model the selection covers, said plainly: a pruned model whose selected
kernels hold 0.4% of its weights is not "50% sparse" in any sense a user cares about.

Example: 4 selected layers whose kernels hold 6,032 of 6,691 parameters give the line
``4 layers selected, holding 90.2% of the parameters``; under half, ``warnings`` adds one
naming the share and the biggest layers left out.
"""

from __future__ import annotations

from prunecli.pruning.selection import LayerInfo

LOW_COVERAGE = 0.5  # below this share of the parameters in scope, warn
_BIGGEST = 3


def share(layers: list[LayerInfo], params_total: int) -> float:
    """The selected kernels' parameters over all of the model's parameters."""
    selected = sum(info.kernel_params() for info in layers if info.selected)
    return selected / params_total if params_total else 0.0


def line(layers: list[LayerInfo], params_total: int) -> str:
    count = sum(info.selected for info in layers)
    return (
        f"{count} layers selected, holding {100 * share(layers, params_total):.1f}% "
        "of the parameters"
    )


def warnings(layers: list[LayerInfo], params_total: int, frozen_stay: bool) -> list[str]:
    """A low-coverage warning and, when fine-tuning leaves frozen layers alone
    (``frozen_stay``), a frozen-layers warning; each one line."""
    found = []
    covered = share(layers, params_total)
    if covered < LOW_COVERAGE:
        left = sorted((i for i in layers if not i.selected), key=lambda i: -i.params)[:_BIGGEST]
        biggest = ", ".join(f"{i.path} ({i.type}, {i.params:,}: {i.reason})" for i in left)
        found.append(
            f"the selected kernels hold only {100 * covered:.1f}% of the parameters: the "
            f"sparsity reached is over them alone; biggest layers left out: {biggest or 'none'}"
        )
    frozen = [i.path for i in layers if i.selected and not i.trainable] if frozen_stay else []
    if frozen:
        shown = ", ".join(frozen[:_BIGGEST]) + (
            f" and {len(frozen) - _BIGGEST} more" if len(frozen) > _BIGGEST else ""
        )
        found.append(
            f"{len(frozen)} pruned layers are frozen (trainable=False), so fine-tuning will not "
            f"recover them: {shown}; set finetune.train_frozen: true to train them too"
        )
    return found
