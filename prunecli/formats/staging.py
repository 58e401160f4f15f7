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
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from prunecli import interrupts
from prunecli.errors import OutputError, os_message
from prunecli.formats import outputs


def check_target(
    path: Path,
    *,
    force: bool,
    inputs: tuple[Path, ...] = (),
    folder: bool = False,
    kind: str | None = None,
) -> None:
    """Refuse an output that would replace an input, clobber a file, or cannot be written.

    ``folder``: the output is a folder (a SavedModel), so an existing folder is what
    ``--force`` replaces and an existing file is in the way. ``kind`` (``outputs.kind_of``
    the path by default) is what is written there: ``--force`` replaces only a file of
    that kind, e.g. a Keras archive where a ``.keras`` goes, a prunecli report where a
    report goes. A symbolic link at the path is refused, never followed."""
    with _os_errors(path):
        _check_target(path, force=force, inputs=inputs, folder=folder, kind=kind)


@contextlib.contextmanager
def _os_errors(path: Path) -> Iterator[None]:
    """An OSError while checking a path (a name over 255 bytes, a folder without search
    permission) is the user's path, not a bug: ``OutputError`` naming it."""
    try:
        yield
    except OSError as exc:
        raise OutputError(os_message(exc, path)) from None


def _check_target(
    path: Path, *, force: bool, inputs: tuple[Path, ...], folder: bool, kind: str | None
) -> None:
    if path.is_symlink():
        raise OutputError(
            f"{path}: is a symbolic link (to {os.readlink(path)}); refusing to write through it"
        )
    for source in inputs:
        if _real(path) == _real(source) or (path.exists() and _same(path, source)):
            raise OutputError(
                f"{path}: output would replace the input {source}; choose another path"
            )
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: output folder {parent} does not exist")
    # What --force could never replace first: "pass --force" would only lead to this.
    if path.is_dir() and not folder:
        raise OutputError(f"{path}: is a folder, expected a file path")
    if path.exists() and folder and not path.is_dir():
        raise OutputError(f"{path}: is a file, expected a folder path (a SavedModel is a folder)")
    if path.is_dir() and folder and not (path / "saved_model.pb").is_file():
        # --force replaces a SavedModel folder, never a user's other folder.
        raise OutputError(f"{path}: is a folder that holds no SavedModel; refusing to replace it")
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists; pass --force to overwrite it")
    if path.exists():
        outputs.require_kind(path, kind or outputs.kind_of(path, folder))
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".prunecli-probe-")
    except OSError as exc:
        raise OutputError(
            f"{path}: output folder {parent} is not writable ({exc.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(
    artifacts: Sequence[Any],
    reports: tuple[Path, Path],
    checkpoint: Path | None,
    *,
    inputs: tuple[Path, ...],
    force: bool,
) -> None:
    """Every check of a run's outputs: the model and exports (``exporting.Artifact``), the
    JSON and Markdown reports, the checkpoint folder (None when not fine-tuning)."""
    written = [artifact.path for artifact in artifacts] + list(reports)
    check_distinct(written + ([checkpoint] if checkpoint is not None else []), inputs)
    for artifact in artifacts:
        check_target(artifact.path, force=force, inputs=inputs, folder=artifact.folder)
    for path, kind in zip(reports, ("report", "markdown"), strict=True):
        check_target(path, force=force, inputs=inputs, kind=kind)


def check_distinct(targets: Sequence[Path], inputs: Sequence[Path]) -> None:
    """Every output path differs from every other, and none is, holds or lies inside an
    input (the model file or folder, data paths, the config file). Each refusal names
    both paths, e.g. ``out/p.keras: output is also the report out/p.keras``."""
    seen: dict[Path, Path] = {}
    for target in targets:
        with _os_errors(target):
            _check_one(target, seen, inputs)


def _check_one(target: Path, seen: dict[Path, Path], inputs: Sequence[Path]) -> None:
    """``check_distinct`` for one target; ``seen``: the real paths of the earlier ones."""
    if target.is_symlink():
        raise OutputError(
            f"{target}: is a symbolic link (to {os.readlink(target)}); refusing to write through it"
        )
    real = _real(target)
    if real in seen:
        raise OutputError(
            f"{target}: two outputs would be written to the same path ({seen[real]}); "
            "give each its own path"
        )
    seen[real] = target
    for source in inputs:
        origin = Path(os.path.realpath(source))
        if real in (origin, _real(source)) or (target.exists() and _same(target, source)):
            raise OutputError(
                f"{target}: output would replace the input {source}; choose another path"
            )
        if origin in real.parents:
            raise OutputError(
                f"{target}: output lies inside the input folder {source}; write it elsewhere"
            )
        if real in origin.parents:
            raise OutputError(
                f"{target}: output folder holds the input {source}; write it elsewhere"
            )


def run_inputs(model: Path, config: Any, config_file: Path | None) -> tuple[Path, ...]:
    """What a run reads: the model, every data file (a TFRecord glob expanded), the config
    file; outputs must stay clear of all of them."""
    found = [model]
    for data in (config.data.train, config.data.validation):
        if data is None:
            continue
        matches = glob.glob(str(data)) if glob.has_magic(str(data)) else []
        found.extend([Path(match) for match in matches] or [data])
    if config_file is not None:
        found.append(config_file)
    return tuple(found)


def _real(path: Path) -> Path:
    """The absolute path with every folder's symlinks resolved, the last part kept as is
    (a symlink there is refused, never followed)."""
    absolute = Path(os.path.abspath(path))
    return Path(os.path.realpath(absolute.parent)) / absolute.name


def _same(path: Path, source: Path) -> bool:
    try:
        return os.path.samefile(path, source)
    except OSError:
        return False


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
        interrupts.complete()  # every output is renamed: a signal now must not say "failed"
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
