"""Output paths: checked before any work, written under temporary names, renamed together.

A run's outputs (model, JSON report, Markdown report, exported artifacts) are staged as
hidden temporary files (folders for a SavedModel) in their target folders, so the final
rename is atomic on the same filesystem, and renamed only once all of them are complete.
A folder replaced with ``--force`` is first moved aside and only deleted after the last
rename. If anything fails or the run is interrupted, every temporary file is removed and
any output already renamed by this run is taken back: a failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from prunecli import interrupts
from prunecli.errors import OutputError


def check_target(
    path: Path, *, force: bool, inputs: tuple[Path, ...] = (), folder: bool = False
) -> None:
    """Refuse an output that would replace an input, clobber a file, or cannot be written.

    ``folder``: the output is a folder (a SavedModel), so an existing folder is what
    ``--force`` replaces and an existing file is in the way."""
    for source in inputs:
        if path.resolve() == source.resolve() or (path.exists() and os.path.samefile(path, source)):
            raise OutputError(f"{path}: output would replace the input model; choose another path")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: output folder {parent} does not exist")
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists; pass --force to overwrite it")
    if path.is_dir() and not folder:
        raise OutputError(f"{path}: is a folder, expected a file path")
    if path.exists() and folder and not path.is_dir():
        raise OutputError(f"{path}: is a file, expected a folder path (a SavedModel is a folder)")
    if path.is_dir() and folder and not (path / "saved_model.pb").is_file():
        # --force replaces a SavedModel folder, never a user's other folder.
        raise OutputError(f"{path}: is a folder that holds no SavedModel; refusing to replace it")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".prunecli-probe-")
    except OSError as exc:
        raise OutputError(
            f"{path}: output folder {parent} is not writable ({exc.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)


class Staging(contextlib.AbstractContextManager["Staging"]):
    """Collects ``(temporary, final)`` pairs; ``commit`` renames them all into place."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._committed: list[Path] = []
        self._aside: list[tuple[Path, Path]] = []  # (old folder moved aside, its final name)

    def temp_for(self, final: Path) -> Path:
        """A fresh hidden file beside ``final`` with the same suffix (Keras picks the format
        from the suffix)."""
        fd, name = tempfile.mkstemp(
            dir=final.parent, prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}"
        )
        os.close(fd)
        self._pending.append((Path(name), final))
        return Path(name)

    def temp_dir_for(self, final: Path) -> Path:
        """A fresh, empty hidden folder beside ``final`` (for a SavedModel)."""
        name = tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        self._pending.append((Path(name), final))
        return Path(name)

    def write_text(self, final: Path, text: str) -> None:
        temp = self.temp_for(final)
        temp.write_text(text, encoding="utf-8")

    def commit(self) -> None:
        interrupts.check()  # a signal whose first raise was lost still stops the rename
        mode = 0o666 & ~_umask()  # mkstemp makes 0600 files; outputs get the usual mode
        for temp, final in self._pending:
            if temp.is_dir():
                _chmod_tree(temp, mode)
                self._move_aside(final)  # a folder cannot be renamed onto a non-empty one
            else:
                os.chmod(temp, mode)
            os.replace(temp, final)
            self._committed.append(final)
        self._pending.clear()
        for old, _ in self._aside:
            shutil.rmtree(old, ignore_errors=True)
        self._aside.clear()

    def _move_aside(self, final: Path) -> None:
        if final.is_dir():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
            os.replace(final, old)
            self._aside.append((old, final))

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            return
        for temp, _ in self._pending:
            _remove(temp)
        for final in self._committed:
            _remove(final)
        for old, final in self._aside:  # a replaced SavedModel folder comes back
            os.replace(old, final)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _chmod_tree(folder: Path, mode: int) -> None:
    """mkdtemp makes a 0700 folder: the SavedModel gets the usual modes, like files do."""
    os.chmod(folder, mode | 0o111 & ~_umask())
    for path in folder.rglob("*"):
        os.chmod(path, (mode | 0o111 & ~_umask()) if path.is_dir() else mode)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
