"""Digests and sizes (raw and gzipped) of written files, and a cache of the input's.

Pure file reads, safe to run beside the main thread: hashlib and zlib release the GIL.
``reporting.measure`` re-exports ``sha256``, ``sizes`` and ``files``.

``size_gzip_bytes`` is the file gzipped at the standard default level 6 (what ``gzip``,
``zipfile`` and ``pigz`` use). Level 9 buys about 2% on a pruned model and costs ten times
the time: 22 s against 2.4 s for a 100 MB kernel with 80% zeros on one core. A file larger
than ``PARALLEL_MIN`` is deflated the way ``pigz -6`` does it, in blocks of ``BLOCK``
bytes on every core, each primed with the 32 KiB before it and ended on a byte boundary
(a sync flush): the blocks concatenate into one valid gzip stream (``gunzip`` restores the
file), a few bytes per block longer than the serial stream. A smaller file gives exactly
``len(gzip.compress(data, 6))``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

GZIP_LEVEL = 6
BLOCK = 4 << 20  # bytes per independently deflated block (pigz uses 128 KiB: fewer flushes)
PARALLEL_MIN = 2 * BLOCK  # below this one serial stream, byte-exact with gzip.compress
_WINDOW = 32 << 10  # deflate's window: each block is primed with the bytes before it
_GZIP_WRAPPER = 10 + 8  # gzip's header (no file name) and trailer around the deflate stream
_READ = 1 << 20


def sha256(path: Path) -> str:
    """A file's SHA-256; for a folder, that of its ``<relative path> <file sha256>`` lines."""
    if path.is_dir():
        lines = "".join(f"{name} {sha256(path / name)}\n" for name in files(path))
        return hashlib.sha256(lines.encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_READ), b""):
            digest.update(block)
    return digest.hexdigest()


def sizes(path: Path) -> tuple[int, int]:
    """(bytes on disk, bytes gzipped at level 6): the second shows what zeros buy.

    A folder counts the sum over its files, each gzipped on its own. Deflated on every
    core: ``background_workers()`` threads and the caller."""
    return Pending(path).result()


# Background deflation waits between blocks while ``paused`` (a count: pauses nest).
_pauses = 0
_resume = threading.Condition()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Hold background deflation for the block: a batch-1 latency timing uses every core,
    and a deflate running beside it would inflate the figure (measured on ResNet50: 45 ms
    beside a deflate against 30 ms alone). Threads finish the block they are on (4 MiB,
    about a tenth of a second) and wait; a caller in ``result()`` is never held."""
    global _pauses
    with _resume:
        _pauses += 1
    try:
        yield
    finally:
        with _resume:
            _pauses -= 1
            _resume.notify_all()


def background_workers() -> int:
    """Threads that deflate beside the main thread: one core is left to its own work (at
    least one thread); latency timings hold them altogether (``paused``)."""
    return max(1, (os.cpu_count() or 1) - 1)


class Pending:
    """``sizes(path)`` being computed: from the moment the file exists, ``workers``
    threads deflate its blocks; ``result()`` joins in with the blocks still left, then
    waits. So a file written early is measured while the main thread does other work,
    and whoever waits for the figure helps finish it instead of idling.

    ``on_done`` gets the figures (or None after an error) from the thread that finishes
    last, whether or not anyone asks for them: it removes a scratch copy, fills a cache.
    The threads are not daemons: a run that stops early still lets them clean up.

    Example: ``Pending(staged, 1).result()`` == ``sizes(staged)``.
    """

    def __init__(
        self,
        path: Path,
        workers: int | None = None,
        on_done: Callable[[tuple[int, int] | None], None] | None = None,
    ) -> None:
        names = files(path) if path.is_dir() else [""]
        self._files = [path / name if name else path for name in names]
        self._raw = sum(file.stat().st_size for file in self._files)
        self._items = [item for file in self._files for item in _pieces(file)]
        self._lengths: list[int] = [0] * len(self._items)
        self._next, self._left, self._error = 0, len(self._items), None
        self._on_done = on_done
        self._lock = threading.Lock()
        self._done = threading.Event()
        if not self._items:
            self._finish()
        count = background_workers() if workers is None else workers
        for _ in range(min(count, len(self._items))):
            threading.Thread(target=self._work, args=(True,), name="prunecli-gzip").start()

    def result(self) -> tuple[int, int]:
        """(bytes on disk, bytes gzipped at level 6), helping with what is left first."""
        self._work(background=False)
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._figures()

    def _figures(self) -> tuple[int, int]:
        return self._raw, _GZIP_WRAPPER * len(self._files) + sum(self._lengths)

    def _work(self, background: bool) -> None:
        while (index := self._take(background)) is not None:
            file, start = self._items[index]
            try:
                self._lengths[index] = _piece_length(file, start)
            except Exception as exc:  # reported by result(); the other pieces still count
                self._error = self._error or exc
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self._finish()

    def _take(self, background: bool) -> int | None:
        if background:
            with _resume:
                _resume.wait_for(lambda: _pauses == 0)
        with self._lock:
            if self._next >= len(self._items):
                return None
            self._next += 1
            return self._next - 1

    def _finish(self) -> None:
        try:
            if self._on_done is not None:
                self._on_done(None if self._error else self._figures())
        finally:
            self._done.set()


def _pieces(file: Path) -> list[tuple[Path, int]]:
    """The independent pieces of one file's deflate: ``(file, -1)`` for a whole small
    file (one serial stream, byte-exact with gzip), ``(file, start)`` per parallel block."""
    size = file.stat().st_size
    if size < PARALLEL_MIN:
        return [(file, -1)]
    return [(file, start) for start in range(0, size, BLOCK)]


def _piece_length(file: Path, start: int) -> int:
    if start < 0:
        return sum(map(len, _serial_deflate(file)))
    return len(deflate_block(file, start, file.stat().st_size))


def _serial_deflate(path: Path) -> Iterator[bytes]:
    """Raw deflate of the whole file, read a megabyte at a time: deflate's output does not
    depend on how its input is split, so this equals ``gzip.compress``'s stream."""
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_READ), b""):
            yield deflate.compress(block)
    yield deflate.flush()


def deflate_block(path: Path, start: int, size: int) -> bytes:
    """The raw deflate of ``path[start:start + BLOCK]`` as one piece of a pigz-style stream:
    primed with the window before it, ended with a sync flush (the last block with the
    final flush), so the pieces in order are one valid deflate stream of the whole file.

    Example: for a 10 MiB file the pieces at 0, 4 and 8 MiB, joined, inflate back to it.
    """
    with path.open("rb") as handle:
        primer_start = max(0, start - _WINDOW)
        handle.seek(primer_start)
        primer = handle.read(start - primer_start)
        data = handle.read(BLOCK)
    options = {"zdict": primer} if primer else {}
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, **options)
    last = start + len(data) >= size
    return deflate.compress(data) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def files(folder: Path) -> list[str]:
    """Every file under ``folder``, as sorted POSIX relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def cache_folder() -> Path:
    """Where measured figures are kept between runs: ``PRUNECLI_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/prunecli`` (``~/.cache/prunecli``)."""
    explicit = os.environ.get("PRUNECLI_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "prunecli"


def _cache_file(key: str) -> Path:
    name = hashlib.sha256(f"{key}|gzip-{GZIP_LEVEL}|block-{BLOCK}".encode()).hexdigest()
    return cache_folder() / "sizes" / f"{name[:32]}.json"


def recall(key: str) -> dict[str, int] | None:
    """Figures stored by ``remember`` under ``key``, or None (also when the cache cannot be
    read: the caller then computes them).

    The input's 'before' figures cost a save and a deflate of the whole model; keyed by the
    input's SHA-256 and the output format (``f"{digest}|.keras|keras 3.15.1"``), a rerun on
    the same file gets them for free.
    """
    try:
        stored = json.loads(_cache_file(key).read_text())
        return {str(k): int(v) for k, v in stored.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def remember(key: str, figures: dict[str, int]) -> None:
    """Store ``figures`` under ``key``, atomically; a cache that cannot be written is
    skipped, never an error (it only saves time)."""
    path = _cache_file(key)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(figures))
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
