"""Output paths: checked before any work, written under temporary names, renamed together.

A run's outputs (model, JSON report, Markdown report) are staged as hidden temporary files
(a SavedModel output: a hidden temporary folder) in their target folders, so the final
rename is atomic on the same filesystem, and renamed only once all of them are complete.
If anything fails or the run is interrupted, every temporary file is removed and any
output already renamed by this run is taken back: a failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from prunecli import interrupts
from prunecli.errors import OutputError


def check_target(path: Path, *, force: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output that would replace an input, clobber a file, or cannot be written."""
    for source in inputs:
        if path.resolve() == source.resolve() or (path.exists() and os.path.samefile(path, source)):
            raise OutputError(f"{path}: output would replace the input model; choose another path")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist")
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists; pass --force to overwrite it")
    if path.is_dir() and (path.suffix or not (path / "saved_model.pb").is_file()):
        # Only a SavedModel folder (no suffix) is ever replaced by a folder: never a user's
        # other folder, whatever --force says.
        raise OutputError(f"{path}: is a folder, expected a file path or a SavedModel folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".prunecli-probe-")
    except OSError as exc:
        raise OutputError(
            f"{path}: output folder {folder} is not writable ({exc.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)


class Staging(contextlib.AbstractContextManager["Staging"]):
    """Collects ``(temporary, final)`` pairs; ``commit`` renames them all into place."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._committed: list[Path] = []

    def temp_for(self, final: Path) -> Path:
        """A fresh hidden file beside ``final`` with the same suffix (Keras picks the format
        from the suffix); for a ``final`` with no suffix (a SavedModel folder), a fresh
        hidden folder."""
        if not final.suffix:
            folder = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
            self._pending.append((folder, final))
            return folder
        fd, name = tempfile.mkstemp(
            dir=final.parent, prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}"
        )
        os.close(fd)
        self._pending.append((Path(name), final))
        return Path(name)

    def write_text(self, final: Path, text: str) -> None:
        temp = self.temp_for(final)
        temp.write_text(text, encoding="utf-8")

    def commit(self) -> None:
        interrupts.check()  # a signal whose first raise was lost still stops the rename
        mode = 0o666 & ~_umask()  # mkstemp makes 0600 files; outputs get the usual mode
        for temp, final in self._pending:
            os.chmod(temp, mode | (0o111 & ~_umask() if temp.is_dir() else 0))
            if temp.is_dir() and final.is_dir():
                # os.replace cannot replace a non-empty folder: move the old one aside.
                old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
                os.replace(final, old / final.name)
                os.replace(temp, final)
                shutil.rmtree(old)
            else:
                os.replace(temp, final)
            self._committed.append(final)
        self._pending.clear()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            return
        for path in [temp for temp, _ in self._pending] + self._committed:
            _remove(path)


def sha256(path: Path) -> str:
    """Of a file's bytes; of a folder, its files' relative paths and bytes in sorted order."""
    digest = hashlib.sha256()
    for file in _files(path):
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def sizes(path: Path) -> tuple[int, int]:
    """(bytes on disk, bytes gzipped at level 9): the second shows what zeros buy. A
    folder counts all its files (gzipped one by one, as an archive of them would be)."""
    total = gzipped = 0
    for file in _files(path):
        data = file.read_bytes()
        total += len(data)
        gzipped += len(gzip.compress(data, compresslevel=9, mtime=0))
    return total, gzipped


def _files(path: Path) -> list[Path]:
    """``[path]`` for a file; every file under a folder, sorted."""
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
