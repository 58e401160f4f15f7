"""Output paths: checked before any work, written under temporary names, renamed together.

A run's outputs (model, JSON report, Markdown report) are staged as hidden temporary files
in their target folders, so the final rename is atomic on the same filesystem, and renamed
only once all of them are complete. If anything fails or the run is interrupted, every
temporary file is removed and any output already renamed by this run is taken back: a
failed run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
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
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected a file path")
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
        from the suffix)."""
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
            os.chmod(temp, mode)
            os.replace(temp, final)
            self._committed.append(final)
        self._pending.clear()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            return
        for temp, _ in self._pending:
            temp.unlink(missing_ok=True)
        for final in self._committed:
            final.unlink(missing_ok=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sizes(path: Path) -> tuple[int, int]:
    """(bytes on disk, bytes gzipped at level 1): the second shows what zeros buy.

    Level 1, not 9: zlib's level 9 searches long match chains, which on the long runs of
    zeros in a pruned kernel is pathologically slow (ResNet50 at 80%: over 5 minutes for
    100 MB, against seconds at level 1), while the zeros compress well at any level.
    """
    data = path.read_bytes()
    return len(data), len(gzip.compress(data, compresslevel=1, mtime=0))


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
