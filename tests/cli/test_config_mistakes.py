"""Config mistakes a user makes, through ``prunecli validate`` as typed: exit 2 with one
line naming the key (and whether the file or the command line set it), never a value
silently taken to mean something else."""

from __future__ import annotations

import pytest
from helpers import refused, write_config

from prunecli import config


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("finetune:\n  epochs: true\n", "epochs: input should be a valid integer, got True"),
        ('finetune:\n  epochs: "3"\n', "finetune.epochs: input should be a valid integer, got '3'"),
        ("output:\n  html: 1\n", "output.html: input should be a valid boolean, got 1"),
        ('prune:\n  min_layer_density: "0.1"\n', "min_layer_density: input should be a valid"),
        ("prune:\n  sparsity: .nan\n", "prune.sparsity: input should be a finite number, got nan"),
        (
            "prune:\n  granularity: {block: [1, 4], rows: 2}\n",
            "prune.granularity: {block: [rows, cols]}: unknown key rows (valid keys here: block)",
        ),
        (
            "prune:\n  sparsity: 0.5\n  sparsity: 0.9\n",
            ":3:3: YAML syntax error: key 'sparsity' appears",
        ),
        ("prune:\n  <<: {sparsity: 0.6}\n", ":2:3: YAML syntax error: merge keys (<<) are not"),
        ("prune: !!map [1, 2]\n", "YAML syntax error: expected a mapping node"),
    ],
    ids=[
        "bool-as-int",
        "quoted-int",
        "int-as-bool",
        "quoted-float",
        "nan",
        "block-key",
        "dup-key",
        "merge-key",
        "map-tag-on-a-list",
    ],
)
def test_wrong_types_and_repeats_are_refused(cli, tmp_path, text, needle):
    path = write_config(tmp_path / "cfg.yaml", text)
    refused(cli("validate", path), f"{path}", needle)


def test_exponent_floats_are_numbers(cli, tmp_path):
    """YAML 1.1 reads ``1e-4`` (no dot) as text; every user means the number."""
    path = write_config(tmp_path / "cfg.yaml", "finetune:\n  learning_rate: 1e-3\n")
    result = cli("validate", path, "--set", "prune.sparsity=7E-1", "--print")
    assert result.exit_code == 0, result.stderr
    assert "learning_rate: 0.001\n" in result.stdout and "sparsity: 0.7\n" in result.stdout
    assert config.parse_set("finetune.epochs=3") == ("finetune.epochs", 3)


@pytest.mark.parametrize(
    ("assignment", "needle"),
    [
        ("x=", "command line: unknown key x"),
        ("prune.foo.bar=1", "command line: unknown key prune.foo"),
        ("prune.sparsity=2", "command line: prune.sparsity: input should be less than 1, got 2"),
        ("finetune.epochs=true", "command line: finetune.epochs: input should be a valid integer"),
        (".prune.sparsity=0.5", "--set '.prune.sparsity=0.5': expected KEY=VALUE"),
        ("prune..sparsity=0.5", "--set 'prune..sparsity=0.5': expected KEY=VALUE"),
    ],
)
def test_set_mistakes_are_blamed_on_the_command_line(cli, tmp_path, assignment, needle):
    """The file is fine; an error the ``--set`` caused must not send the user to the file."""
    path = write_config(tmp_path / "cfg.yaml", "prune:\n  sparsity: 0.5\n")
    line = refused(cli("validate", path, "--set", assignment), needle)
    assert f"{path}:" not in line


def test_a_rule_mixing_file_and_command_line_names_both(cli, tmp_path):
    path = write_config(tmp_path / "cfg.yaml", "prune:\n  scope: global\n")
    refused(
        cli("validate", path, "--set", "prune.layers.overrides.dense=0.5"),
        f"{path} + command line: prune: prune.layers.overrides",
    )
    refused(cli("validate", path, "--set", "prune.scope=1"), "command line: prune.scope:")


def test_image_size_is_bounded_like_an_image(cli, tmp_path):
    """Every image is resized to data.image_size: [65536, 65536] made a fully convolutional
    model's run allocate 16 GB per image (exit 1, ResourceExhaustedError, or the OOM
    killer), past the 2^26-pixel bound an image file gets."""
    path = write_config(tmp_path / "cfg.yaml", "data:\n  image_size: [65536, 65536]\n")
    refused(cli("validate", path), "data.image_size: 65536 x 65536 is more than 67,108,864")
    ok = write_config(tmp_path / "ok.yaml", "data:\n  image_size: [8192, 8192]\n")
    assert cli("validate", ok).exit_code == 0
