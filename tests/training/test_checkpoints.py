"""Preemption-safe fine-tuning: a signal leaves a checkpoint, ``--resume`` finishes the run.

Real processes and real signals: the interrupted run exits 130 with only its checkpoint
folder beside the output; the resumed run's model equals an uninterrupted run's (same seed,
CPU) to 1e-6, and its checkpoint is gone. Resuming a checkpoint of another run, resuming
without one, or ignoring one are each one line on stderr and exit 2.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    Events,
    core_outputs,
    prune_args,
    reaped,
    run_prunecli,
    saved_weights,
    start,
    write_config,
)

# Six epochs of 41 steps (81 training samples, batch 2), masks growing over four epochs:
# a resume at the wrong step, with the wrong batches or the wrong optimizer state shows.
CONFIG = """\
seed: 7
prune:
  sparsity: 0.7
  schedule: {type: polynomial, end_epoch: 4, frequency: 5}
finetune:
  epochs: 6
  batch_size: 2
  learning_rate: 0.01
  checkpoint_steps: 10
"""


def assert_same_model(resumed: Path, reference: Path) -> None:
    got, want = saved_weights(resumed), saved_weights(reference)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        assert np.array_equal(a == 0, b == 0)  # the same masks


def mask_updates(report: Path) -> list[dict]:
    return json.loads(report.read_text())["finetune"]["mask_updates"]


@pytest.fixture
def reference(cli, make_model, npz_data, tmp_path) -> tuple[Path, Path, Path]:
    """(model, config, output of an uninterrupted run)."""
    model = make_model("cnn", ".h5")
    config = write_config(tmp_path / "cfg.yaml", CONFIG)
    (tmp_path / "ref").mkdir()
    output = tmp_path / "ref" / "p.keras"
    result = cli(*prune_args(model, npz_data, config, output), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert core_outputs(output.parent) == [
        "p.keras", "p.report.json", "p.report.md",
    ]  # fmt: skip
    return model, config, output


def test_sigterm_leaves_a_checkpoint_and_resume_matches_uninterrupted(
    reference, npz_data, out, tmp_path
):
    model, config, expected = reference
    args = [*prune_args(model, npz_data, config, out / "p.keras"), "--log-format", "json"]
    with reaped(start(args)) as child:
        stream = Events(child.stderr)
        seen = stream.until(lambda e: e["event"] == "checkpoint" and e["reason"] == "steps")
        assert seen[-1]["step"] == 10
        child.send_signal(signal.SIGTERM)
        seen = stream.until(lambda e: e["event"] == "error")
        code = child.wait(timeout=60)
    assert code == 130, seen
    assert seen[-1]["exit_code"] == 130 and "--resume" in seen[-1]["message"]
    assert seen[-2]["event"] == "checkpoint"  # the last one, written on the signal
    assert sorted(p.name for p in out.iterdir()) == ["p.ckpt"]  # no model, no report
    assert [p.name for p in (out / "p.ckpt").iterdir()] == ["checkpoint.npz"]
    assert child.stdout.read() == ""

    resumed = run_prunecli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    stream = [json.loads(line) for line in resumed.stderr.splitlines()]
    assert [e["step"] for e in stream if e["event"] == "resumed"] == [seen[-2]["step"]]
    assert core_outputs(out) == ["p.keras", "p.report.json", "p.report.md"]
    assert_same_model(out / "p.keras", expected)
    assert mask_updates(out / "p.report.json") == mask_updates(expected.with_suffix(".report.json"))


def test_signal_at_a_known_step_mid_epoch_then_wrong_and_right_resumes(
    reference, npz_data, out, tmp_path, cli
):
    model, config, expected = reference
    args = prune_args(model, npz_data, config, out / "p.keras")
    # The signal comes during step 53 (batch 12 of the second epoch, 41 steps an epoch): the
    # last periodic save was at step 50, the last checkpoint is before step 54.
    with reaped(start([*args, "--log-format", "json"], env={"SIGNAL_AT_STEP": "53"})) as child:
        seen = Events(child.stderr).until(lambda e: e["event"] == "error")
        assert child.wait(timeout=60) == 130
    assert [(e["reason"], e["step"]) for e in seen if e["event"] == "checkpoint"][-2:] == [
        ("steps", 50), ("signal", 54),
    ]  # fmt: skip

    ignored = cli(*args, "--quiet")
    assert ignored.exit_code == 2
    assert ignored.stderr == (
        f"prunecli: error: {out / 'p.ckpt'}: holds the checkpoint of an interrupted run; "
        "pass --resume to continue it or --force to start over\n"
    )
    other = cli(*args, "--resume", "--sparsity", "0.5", "--quiet")
    assert other.exit_code == 2
    assert "checkpoint of a different run (config or input model changed)" in other.stderr
    assert other.stderr.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["p.ckpt"]

    resumed = cli(*args, "--resume")  # plain log mode: says where it resumed
    assert resumed.exit_code == 0, resumed.stderr
    assert f"resumed from {out / 'p.ckpt'} after 54 steps (epoch 2)" in resumed.stderr
    assert core_outputs(out) == ["p.keras", "p.report.json", "p.report.md"]
    assert_same_model(out / "p.keras", expected)
    assert mask_updates(out / "p.report.json") == mask_updates(expected.with_suffix(".report.json"))


def test_resume_without_a_checkpoint(cli, make_model, npz_data, tmp_path):
    model = make_model("cnn", ".h5")
    config = write_config(tmp_path / "cfg.yaml", CONFIG)
    result = cli(*prune_args(model, npz_data, config, tmp_path / "p.keras"), "--resume")
    assert result.exit_code == 2
    assert result.stderr == (
        f"prunecli: error: --resume: no checkpoint in {tmp_path / 'p.ckpt'} "
        "(run without --resume to start from the beginning)\n"
    )
    no_training = cli(*prune_args(model, npz_data, config, tmp_path / "p.keras"), "--resume",
                      "--epochs", "0")  # fmt: skip
    assert no_training.exit_code == 2
    assert (
        no_training.stderr == "prunecli: error: --resume: nothing to resume, finetune.epochs is 0\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "data.npz", "models"]


def test_unreadable_checkpoint_and_custom_folder(cli, make_model, npz_data, tmp_path):
    model = make_model("cnn", ".h5")
    folder = tmp_path / "ckpts"
    config = write_config(tmp_path / "cfg.yaml", CONFIG + f"  checkpoint_dir: {folder.name}\n")
    folder.mkdir()
    (folder / "checkpoint.npz").write_bytes(b"not a checkpoint")
    args = prune_args(model, npz_data, config, tmp_path / "p.keras")
    result = cli(*args, "--resume", "--quiet")
    assert result.exit_code == 2
    assert result.stderr == (
        f"prunecli: error: {folder / 'checkpoint.npz'}: not a readable prunecli checkpoint "
        f"(damaged, or not written by prunecli); remove {folder} to start over\n"
    )
    # --force starts over: the run succeeds and its own checkpoint is removed at the end.
    fresh = cli(*args, "--force", "--quiet")
    assert fresh.exit_code == 0, fresh.stderr
    assert not folder.exists()
