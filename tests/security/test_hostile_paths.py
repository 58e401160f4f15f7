"""Paths a user (or an attacker preparing a folder) hands prunecli: a symlink at a relative
output path, a model path that is a FIFO or a device, a ``.keras`` whose member names climb
out of the archive. Each is exit 2 with one line naming the path, and nothing else changes."""

from __future__ import annotations

import os
import zipfile

import pytest
from helpers import refused, run_prunecli, sha256, write_image_splits


@pytest.mark.parametrize("which", ["-o", "--report"])
def test_relative_output_through_a_symlink_is_refused(
    cli, make_model, tmp_path, monkeypatch, which
):
    """``-o out/p.keras`` typed relative to the working directory, where ``out/p.keras`` is
    a link to someone's model: refused, never written through (absolute paths already were)."""
    model = make_model("dense", ".keras", train=False)
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / ("mine.keras" if which == "-o" else "mine.report.json")
    victim.write_bytes(model.read_bytes() if which == "-o" else b'{"schema_version": 1}')
    digest = sha256(victim)
    (tmp_path / "out").mkdir()
    name = "p.keras" if which == "-o" else "p.report.json"
    (tmp_path / "out" / name).symlink_to(victim)
    monkeypatch.chdir(tmp_path)
    extra = ("-o", "out/p.keras", *(() if which == "-o" else ("--report", f"out/{name}")))
    for force in ((), ("--force",)):
        refused(
            cli("prune", model, "--epochs", "0", "--quiet", *extra, *force),
            str(tmp_path / "out" / name),
            "symbolic link",
        )
    assert sha256(victim) == digest
    assert sorted(p.name for p in victim_dir.iterdir()) == [victim.name]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [name]


def test_model_path_that_is_a_fifo_is_refused_not_read(tmp_path):
    """A FIFO (or /dev/zero) as MODEL would block or be read without end: refused by type."""
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    result = run_prunecli("inspect", fifo, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"prunecli: error: {fifo}: not a regular file or folder (a device, FIFO or socket)"
    ]


@pytest.mark.parametrize("name", ["../../escaped.txt", "/tmp/escaped.txt", "assets/../../x"])
def test_keras_member_climbing_out_of_the_archive_is_refused(cli, make_model, tmp_path, name):
    """A member name with ``..`` or an absolute path is how a zip writes outside the folder
    it is extracted to: no Keras archive has one, so the file is refused before loading."""
    model = make_model("dense", ".keras", train=False)
    hostile = tmp_path / "hostile.keras"
    with zipfile.ZipFile(model) as source, zipfile.ZipFile(hostile, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr(name, b"pwned")
    for command in (("inspect", hostile), ("prune", hostile, "--epochs", "0", "--quiet")):
        line = refused(cli(*command), str(hostile), name, "outside the archive")
        assert len(line) < 300
    assert not list(tmp_path.rglob("escaped.txt"))


def test_report_path_that_is_a_folder_says_so_without_force(cli, make_model, out):
    """A folder at ``--report`` said "already exists; pass --force", and --force then
    refused it: what --force cannot fix is said first."""
    model = make_model("dense", ".keras", train=False)
    (out / "rep").mkdir()
    for force in ((), ("--force",)):
        refused(
            cli("prune", model, "--epochs", "0", "--quiet", "-o", out / "p.keras",
                "--report", out / "rep", *force),
            f"{out / 'rep'}: is a folder, expected a file path",
        )  # fmt: skip
    assert [p.name for p in out.iterdir()] == ["rep"]


@pytest.mark.parametrize("where", ["train", "train/class_0"])
def test_analysis_is_never_written_into_the_data(cli, make_model, tmp_path, where):
    """``analyze -o data/train/class_0`` wrote sensitivity.png and model.png among the
    training images (the next run trains on them): a data folder is an input."""
    model = make_model("cnn", ".keras", train=False)
    root = write_image_splits(tmp_path / "images")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    target = root / where
    result = cli("analyze", model, "--data", root, "-o", target, "--set", "analyze.levels=[0.5]")
    refused(result, "lies inside the input folder", str(root / "train"))
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


@pytest.mark.parametrize("flag", ["-o", "--report"])
def test_a_name_too_long_for_the_filesystem_is_exit_2(cli, make_model, out, flag):
    """A 300-byte file name (ENAMETOOLONG from the first lstat) was exit 1, 'a bug'."""
    model = make_model("dense", ".keras", train=False)
    name = out / ("x" * 300 + (".keras" if flag == "-o" else ".json"))
    extra = (flag, name) if flag == "-o" else ("-o", out / "p.keras", flag, name)
    refused(cli("prune", model, "--epochs", "0", "--quiet", *extra), "file name too long")
    assert list(out.iterdir()) == []


def test_data_that_is_a_device_is_named_as_one(cli, make_model, out):
    """``--data /dev/zero`` said "data folder not found"."""
    model = make_model("dense", ".keras", train=False)
    result = cli("prune", model, "--data", "/dev/zero", "--epochs", "0", "-o", out / "p.keras")
    refused(result, "/dev/zero: not a regular file or folder (a device, FIFO or socket)")


@pytest.mark.parametrize("name", ["P.KERAS", "p.H5"])
def test_upper_case_model_suffix_is_refused_up_front(cli, make_model, out, name):
    """``-o P.KERAS`` failed saving with a message naming prunecli's temporary file; a
    file so named would not load in plain Keras either."""
    model = make_model("dense", ".keras", train=False)
    line = refused(cli("prune", model, "--epochs", "0", "--quiet", "-o", out / name),
                   str(out / name), "lower case")  # fmt: skip
    assert "prunecli-run" not in line and list(out.iterdir()) == []


def test_report_named_like_its_own_html_page_is_refused(cli, make_model, out):
    """``--report r.html``: the JSON report and the HTML page went to the same r.html, one
    silently replacing the other."""
    model = make_model("dense", ".keras", train=False)
    result = cli("prune", model, "--epochs", "0", "--quiet", "-o", out / "p.keras",
                 "--report", out / "r.html")  # fmt: skip
    refused(result, "two outputs would be written to the same path", str(out / "r.html"))
    assert list(out.iterdir()) == []
