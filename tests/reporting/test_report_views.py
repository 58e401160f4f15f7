"""Issue 11's report: ``finetune.loss``, the Markdown's settings and timing, console tables
that are never cut and summarise long layer lists, and the schedule-coverage warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import write_config

from prunecli.core import schedule_coverage as coverage
from prunecli.core import schedules


def _prune(cli, *args: object) -> tuple[dict, str, str]:
    """Run ``prunecli prune`` (tables on stdout); return (report JSON, stdout, stderr)."""
    result = cli("prune", *args, "--force", "--log-format", "plain")
    assert result.exit_code == 0, result.stderr
    report = next(Path(a) for a in map(str, args) if a.endswith(".report.json"))
    return json.loads(report.read_text()), result.stdout, result.stderr


def _first_column(table: str) -> str:
    """A rich table's first column, its folded pieces joined: what the cells hold."""
    pieces = [line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│")]
    return "".join(pieces)


def test_report_names_the_loss_and_the_markdown_says_what_ran(
    cli, make_model, image_data, tmp_path
):
    model = make_model("cnn", ".keras", compiled=False)  # no compile config: loss inferred
    cfg = write_config(
        tmp_path / "cfg.yaml",
        "prune:\n  sparsity: 0.6\n  schedule: {type: polynomial, end_epoch: 1}\n"
        "finetune:\n  epochs: 2\n  batch_size: 16\n",
    )
    out = tmp_path / "p.keras"
    report, _, stderr = _prune(
        cli,
        model,
        "-c",
        cfg,
        "--data",
        image_data,
        "-o",
        out,
        "--report",
        tmp_path / "p.report.json",
    )
    assert report["finetune"]["loss"] == "sparse_categorical_crossentropy"
    markdown = (tmp_path / "p.report.md").read_text()
    for row in (
        "| method | magnitude |",
        "| granularity | unstructured |",
        "| scope | layer |",
        "| target sparsity | 60.00% |",
        "| loss | sparse_categorical_crossentropy |",
        f"| epochs | 2 ({report['finetune']['steps']:,} steps run) |",
    ):
        assert row in markdown
    assert "| schedule | polynomial, epochs 0 → 1, from 0.00%, power 3" in markdown
    for stage, seconds in report["timing"].items():
        assert f"| {stage.removesuffix('_s')} | {seconds:.2f} |" in markdown
    assert "warning: the schedule" not in stderr  # half the steps run at the final sparsity


def test_schedule_ending_on_the_last_step_is_warned_about(cli, make_model, image_data, tmp_path):
    model = make_model("cnn", ".h5")
    report, _, stderr = _prune(
        cli, model, "--data", image_data, "-o", tmp_path / "p.keras", "--epochs", "1",
        "--set", "prune.schedule.type=polynomial", "--report", tmp_path / "p.report.json",
    )  # fmt: skip
    steps = report["finetune"]["steps"]
    assert f"warning: the schedule reaches its final sparsity at step {steps} of {steps}" in stderr
    assert "only 0 fine-tuning steps (0%)" in stderr


def test_console_tables_are_never_cut_and_long_layer_lists_are_summarised(cli, tmp_path):
    import keras

    long_name = "block_" + "very_long_layer_path_segment_" * 4 + "end"
    layers = [keras.Input((4,))]
    layers += [keras.layers.Dense(4 + i % 7, name=f"d{i:02d}") for i in range(44)]
    layers += [keras.layers.Dense(40, name=long_name)]  # the largest layer: always shown
    model = keras.Sequential(layers)
    path = tmp_path / "deep.keras"
    model.save(path)

    report, stdout, _ = _prune(
        cli, path, "--epochs", "0", "-o", tmp_path / "deep.pruned.keras",
        "--report", tmp_path / "deep.report.json",
    )  # fmt: skip
    assert "…" not in stdout.replace("… 15 more", "")  # nothing cut, even at 80 columns
    layer_table = stdout[stdout.index("layers") :]
    assert "\n… 15 more layers (the JSON and Markdown reports list every layer)" in layer_table
    shown = _first_column(layer_table)
    rows = report["layers"]
    assert len(rows) == 45  # the JSON keeps every layer
    largest = sorted(rows, key=lambda row: -row["params"])[:30]
    assert all(row["path"] in shown for row in largest)
    assert long_name in shown  # folded over lines, whole
    markdown = (tmp_path / "deep.report.md").read_text()
    assert all(f"| {row['path']} |" in markdown for row in rows)


@pytest.mark.parametrize(
    ("kind", "epochs", "end_epoch", "expected"),
    [("polynomial", 1, 1, 10), ("polynomial", 10, 1, 10), ("one_shot", 1, 1, 0)],
)
def test_first_final_step_matches_a_scan(kind, epochs, end_epoch, expected):
    plan = schedules.Plan(10, 10 * epochs, end_epoch=end_epoch)
    schedule = schedules.build(kind, 0.8, plan)
    scan = next(s for s in range(plan.total_steps + 1) if schedule.sparsity_at(s) >= 0.8)
    assert coverage.first_final_step(schedule, plan.total_steps) == scan == expected
    warned = coverage.warning(schedule, plan.total_steps) is not None
    assert warned == (plan.total_steps - scan < 0.1 * plan.total_steps)


def test_iterative_rounds_leave_a_round_at_the_final_sparsity():
    schedule = schedules.Iterative(0.9, rounds=4, total=1000)
    assert coverage.first_final_step(schedule, 1000) == 750
    assert coverage.warning(schedule, 1000) is None
    many = schedules.Iterative(0.9, rounds=20, total=1000)  # the last round: 5% of the steps
    assert "only 50 fine-tuning steps (5%)" in coverage.warning(many, 1000)
    assert np.isclose(many.sparsity_at(950), 0.9)
