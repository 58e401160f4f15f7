"""formats/staging.py: outputs staged under hidden temporary names, renamed together, taken
back together on a failure; ``check_target`` refuses what a run must not write over."""

from __future__ import annotations

import gzip
import os
import stat
import zipfile
from pathlib import Path

import pytest
from helpers import leftovers

from prunecli.errors import OutputError
from prunecli.formats import staging
from prunecli.reporting import measure


def test_temp_names_are_hidden_beside_the_target_with_its_suffix(tmp_path):
    with staging.Staging() as stage:
        file = stage.temp_for(tmp_path / "model.keras")
        folder = stage.temp_dir_for(tmp_path / "model.savedmodel")
        assert file.parent == folder.parent == tmp_path
        assert file.name.startswith(".model.") and file.name.endswith(".tmp.keras")
        assert folder.name.startswith(".model.savedmodel.") and folder.name.endswith(".tmp")
        assert file.is_file() and file.read_bytes() == b""
        assert folder.is_dir() and list(folder.iterdir()) == []
        assert stage.temp_for(tmp_path / "model.keras") != file  # a fresh name each time
        staged = leftovers(tmp_path)
    assert len(staged) == 3  # nothing is renamed without commit ...
    assert all(name.startswith(".model.") for name in staged)  # ... nor removed


def test_commit_renames_every_output_with_the_usual_mode(tmp_path):
    with staging.Staging() as stage:
        stage.write_text(tmp_path / "p.report.json", "{}\n")
        stage.write_text(tmp_path / "p.report.md", "# report\n")
        model = stage.temp_for(tmp_path / "p.keras")
        model.write_bytes(b"model")
        stage.commit()
    assert leftovers(tmp_path) == ["p.keras", "p.report.json", "p.report.md"]
    assert (tmp_path / "p.report.json").read_text() == "{}\n"
    assert (tmp_path / "p.keras").read_bytes() == b"model"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "p.keras").stat().st_mode) == 0o666 & ~umask  # not 0600


def test_a_failure_before_commit_leaves_nothing(tmp_path):
    (tmp_path / "p.keras").write_bytes(b"old")
    with pytest.raises(RuntimeError), staging.Staging() as stage:
        stage.write_text(tmp_path / "p.report.json", "{}")
        stage.temp_dir_for(tmp_path / "p.savedmodel")
        raise RuntimeError("the model failed to save")
    assert leftovers(tmp_path) == ["p.keras"]
    assert (tmp_path / "p.keras").read_bytes() == b"old"


def test_a_failure_during_commit_takes_back_what_was_renamed(tmp_path, monkeypatch):
    real_replace = os.replace

    def replace(source, target):
        if Path(target).name == "p.report.md":
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError), staging.Staging() as stage:
        stage.write_text(tmp_path / "p.keras", "model")
        stage.write_text(tmp_path / "p.report.md", "# report")
        stage.commit()
    assert leftovers(tmp_path) == []  # p.keras was renamed, then removed again


def test_staging_folder_is_removed_on_failure_and_replaces_on_commit(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staging.Staging() as stage:
        staged = stage.temp_dir_for(final)
        (staged / "new.txt").write_text("new")
        raise RuntimeError("before commit")
    assert leftovers(tmp_path) == ["model"]
    assert leftovers(final) == ["old.txt"]
    with staging.Staging() as stage:
        staged = stage.temp_dir_for(final)
        (staged / "new.txt").write_text("new")
        stage.commit()
    assert leftovers(tmp_path) == ["model"]
    assert leftovers(final) == ["new.txt"]
    assert measure.sizes(final) == (3, len(gzip.compress(b"new", 6, mtime=0)))


# --- check_target --------------------------------------------------------------------------


def savedmodel_folder(path: Path) -> Path:
    path.mkdir()
    (path / "saved_model.pb").write_bytes(b"pb")
    return path


@pytest.mark.parametrize(
    ("make", "options", "expected"),
    [
        (lambda p: p.write_text("x"), {}, "already exists; pass --force to overwrite it"),
        (lambda p: p.mkdir(), {"force": True}, "is a folder, expected a file path"),
        (lambda p: p.write_text("x"), {"force": True, "folder": True},
         "is a file, expected a folder path (a SavedModel is a folder)"),
        (lambda p: p.mkdir(), {"force": True, "folder": True},
         "is a folder that holds no SavedModel; refusing to replace it"),
    ],
    ids=["exists", "folder-for-file", "file-for-folder", "not-a-savedmodel"],
)  # fmt: skip
def test_check_target_refusals_name_the_path(tmp_path, make, options, expected):
    target = tmp_path / "out"
    make(target)
    with pytest.raises(OutputError) as info:
        staging.check_target(target, **{"force": False, **options})
    assert str(info.value) == f"{target}: {expected}"


def test_check_target_refuses_to_replace_an_input_or_write_through_a_link(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"model")
    with pytest.raises(OutputError, match="output would replace the input"):
        staging.check_target(model, force=True, inputs=(model,))
    link = tmp_path / "link.keras"
    link.symlink_to(model)
    with pytest.raises(OutputError, match=r"is a symbolic link .*; refusing to write through it"):
        staging.check_target(link, force=True, inputs=(model,))


def test_check_target_refuses_a_missing_or_read_only_folder(tmp_path):
    missing = tmp_path / "nope" / "m.keras"
    with pytest.raises(OutputError, match=f"output folder {tmp_path / 'nope'} does not exist"):
        staging.check_target(missing, force=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anyway: nothing to refuse
            pytest.skip("running as root")
        with pytest.raises(OutputError, match=r"locked is not writable \(Permission denied\)"):
            staging.check_target(locked / "m.keras", force=False)
    finally:
        locked.chmod(0o700)


def test_check_target_accepts_new_paths_and_forced_replacements(tmp_path):
    staging.check_target(tmp_path / "new.keras", force=False)
    with zipfile.ZipFile(tmp_path / "old.keras", "w") as archive:  # a Keras archive's shape
        archive.writestr("config.json", "{}")
    staging.check_target(tmp_path / "old.keras", force=True)
    staging.check_target(savedmodel_folder(tmp_path / "sm"), force=True, folder=True)
    assert leftovers(tmp_path) == ["old.keras", "sm"]  # the write probe is gone
