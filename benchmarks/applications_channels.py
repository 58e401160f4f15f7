"""Channel pruning on keras.applications models nobody here wrote: what it removes, what
it keeps whole and why, and whether the narrower model is exactly the original with those
channels zeroed.

Each model is built offline (``weights=None``, random weights with BatchNorm statistics away
from 0/1, as the structured tests do) at a small input, planned at 50% per group (l1,
``round_to: 8``), rebuilt, and run next to the original with the removed channels zeroed by
hand (``tests/helpers.zeroed_at_source``) on two random images; the table shows parameters
and MACs before and after, the groups and why some are frozen, the largest difference
between the two models' outputs (logits: ``classifier_activation=None``), and how far the
zeroing moved the original's outputs (so that the comparison is not vacuous).
``--published`` also counts each model's MACs at its ImageNet size against the figure its
paper (or the figure commonly cited) gives.

    .venv/bin/python benchmarks/applications_channels.py [--only ConvNeXtTiny ...] [--published]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# name -> (input side, extra keyword arguments, published MACs at the ImageNet size)
MODELS: dict[str, tuple[int, dict[str, Any], float]] = {
    "MobileNetV3Small": (32, {"alpha": 0.75}, 56e6),  # 1.0: Howard et al. 2019, Table 3
    "MobileNetV3Large": (32, {"alpha": 0.75}, 219e6),  # 1.0: Table 3
    "EfficientNetB0": (32, {}, 0.39e9),  # Tan & Le 2019, Table 2
    "EfficientNetV2B0": (32, {}, 0.72e9),  # the official efficientnetv2 repository (0.72B)
    "DenseNet121": (32, {}, 2.87e9),  # commonly cited (2.87G)
    "ResNet50V2": (32, {}, None),  # Keras' variant strides at each stage's end
    "NASNetMobile": (32, {}, 564e6),  # Zoph et al. 2018, Table 2
    "Xception": (71, {}, 8.4e9),  # commonly cited at 299x299
    "InceptionV3": (75, {}, 5.7e9),  # commonly cited at 299x299 (5.7G)
    "ConvNeXtTiny": (32, {}, 4.5e9),  # Liu et al. 2022, Table 1 (4.5G FLOPs)
    "VGG16": (32, {}, 15.5e9),  # commonly cited (15.5G MACs)
}


def application(name: str, side: int, extra: dict[str, Any]) -> Any:
    import keras

    build = getattr(keras.applications, name)
    return build(
        weights=None, input_shape=(side, side, 3), classes=3, classifier_activation=None, **extra
    )


def frozen_reasons(groups: list[Any]) -> dict[str, int]:
    """Each frozen group's reasons, layer paths dropped, counted."""
    found = collections.Counter(
        reason.split(": ", 1)[-1] for g in groups for reason in g.frozen if g.frozen
    )
    return dict(found.most_common())


def measure(name: str) -> dict[str, Any]:
    """One model: planned, rebuilt, compared with the zeroed original."""
    import keras
    import numpy as np
    from helpers import randomized, sample, zeroed_at_source

    from prunecli.config import Prune
    from prunecli.core.schedules import OneShot
    from prunecli.reporting import flops
    from prunecli.structured.pruner import ChannelPruner

    side, extra, _ = MODELS[name]
    keras.utils.set_random_seed(0)
    model = randomized(application(name, side, extra))
    macs = flops.count(model)
    x = sample(model) * 50 + 100  # pixels about the 0..255 range
    original = np.asarray(model(x))
    start = time.perf_counter()
    pruner = ChannelPruner(model, Prune(granularity="channel", sparsity=0.5), OneShot)
    pruner.update(0)
    reference = zeroed_at_source(model, pruner.plan)
    groups = pruner.plan.groups
    narrow, _ = pruner.rebuilt(model)
    seconds = time.perf_counter() - start
    zeroed = np.asarray(reference(x))
    error = np.abs(np.asarray(narrow(x)) - zeroed).max()
    return {
        "model": name,
        "input": side,
        "params": [model.count_params(), narrow.count_params()],
        "macs": [macs, flops.count(narrow)],
        "groups": len(groups),
        "frozen": sum(bool(g.frozen) for g in groups),
        "frozen_reasons": frozen_reasons(groups),
        "max_abs_difference": float(error),
        "zeroing_moved_outputs_by": float(np.abs(zeroed - original).max()),  # not vacuous
        "plan_and_rebuild_s": round(seconds, 2),
    }


def published(name: str) -> dict[str, Any]:
    """MACs at the ImageNet input the application defaults to, against the cited figure."""
    import keras

    from prunecli.reporting import flops

    *_, cited = MODELS[name]
    extra = {"input_shape": (224, 224, 3)} if name.startswith("MobileNetV3") else {}
    counted = flops.count(getattr(keras.applications, name)(weights=None, **extra))
    keras.backend.clear_session()
    return {"macs_imagenet": counted, "cited": cited, "ratio": cited and counted / cited}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=list(MODELS))
    parser.add_argument("--published", action="store_true")
    args = parser.parse_args()
    rows = []
    for name in args.only:
        row = measure(name) | (published(name) if args.published else {})
        rows.append(row)
        before, after = row["params"], row["macs"]
        print(
            f"{name:18} {row['input']:>3}  params {before[0]:>11,} -> {before[1]:>10,}  "
            f"MACs {after[0]:>12,} -> {after[1]:>11,}  groups {row['groups']:>3} "
            f"frozen {row['frozen']:>2}  max|diff| {row['max_abs_difference']:.1e} "
            f"(zeroing moved {row['zeroing_moved_outputs_by']:.2f})"
            + (f"  MACs@ImageNet {row['macs_imagenet']:,}" if args.published else ""),
            flush=True,
        )
    out = HERE / "results" / "applications_channels.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
