"""Measurements of written files: digests and sizes (raw and gzipped).

Pure file reads, safe to run beside the main thread: hashlib and zlib release the GIL.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path


def sha256(path: Path) -> str:
    """A file's SHA-256; for a folder, that of its ``<relative path> <file sha256>`` lines."""
    if path.is_dir():
        lines = "".join(f"{name} {sha256(path / name)}\n" for name in files(path))
        return hashlib.sha256(lines.encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sizes(path: Path) -> tuple[int, int]:
    """(bytes on disk, bytes gzipped at level 9): the second shows what zeros buy.

    A folder counts the sum over its files, each gzipped on its own."""
    if path.is_dir():
        pairs = [sizes(path / name) for name in files(path)]
        return sum(size for size, _ in pairs), sum(gzipped for _, gzipped in pairs)
    return path.stat().st_size, _gzip_size(path)


_GZIP_WRAPPER = 10 + 8  # gzip's header (no file name) and trailer around the deflate stream
_CHUNK = 1 << 20


def _gzip_size(path: Path) -> int:
    """``len(gzip.compress(file_bytes, 9))``, streamed: deflate's output does not depend on
    how its input is split, so a 100 MB model costs a megabyte of memory, not two copies."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    total = _GZIP_WRAPPER
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            total += len(deflate.compress(block))
    return total + len(deflate.flush())


def files(folder: Path) -> list[str]:
    """Every file under ``folder``, as sorted POSIX relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
