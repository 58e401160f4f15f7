"""reporting.measure: the gzip size at level 6, serial and in parallel blocks, and the cache."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pytest

from prunecli.reporting import sizes as measure


def _sparse_floats(path: Path, count: int) -> bytes:
    """float32 noise with 80% exact zeros: what a pruned kernel looks like on disk."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal(count).astype(np.float32)
    values[rng.random(count) < 0.8] = 0.0
    path.write_bytes(values.tobytes())
    return path.read_bytes()


def test_small_file_is_exactly_gzip_level_6(tmp_path: Path) -> None:
    data = _sparse_floats(tmp_path / "k.bin", 20_000)
    assert measure.sizes(tmp_path / "k.bin") == (len(data), len(gzip.compress(data, 6)))


def test_parallel_blocks_form_one_valid_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 64 KiB blocks so a 300 KB file takes the parallel path (5 blocks, the last one short)
    monkeypatch.setattr(measure, "BLOCK", 1 << 16)
    monkeypatch.setattr(measure, "PARALLEL_MIN", 1 << 17)
    path = tmp_path / "k.bin"
    data = _sparse_floats(path, 75_000)
    starts = range(0, len(data), measure.BLOCK)
    stream = b"".join(measure.deflate_block(path, start, len(data)) for start in starts)
    assert zlib.decompress(stream, -zlib.MAX_WBITS) == data  # the pieces are one stream
    size, gzipped = measure.sizes(path)
    assert (size, gzipped) == (len(data), len(stream) + 18)
    serial = len(gzip.compress(data, 6))
    assert serial <= gzipped <= serial * 1.01  # primed blocks cost almost nothing


def test_folder_sums_its_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"a" * 1000)
    (tmp_path / "sub" / "b.bin").write_bytes(b"xyz")
    expected = len(gzip.compress(b"a" * 1000, 6)) + len(gzip.compress(b"xyz", 6))
    assert measure.sizes(tmp_path) == (1003, expected)


def test_cache_round_trip_and_unreadable_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRUNECLI_CACHE_DIR", str(tmp_path / "cache"))
    assert measure.recall("digest|.keras") is None
    measure.remember("digest|.keras", {"size_bytes": 10, "size_gzip_bytes": 7})
    assert measure.recall("digest|.keras") == {"size_bytes": 10, "size_gzip_bytes": 7}
    assert measure.recall("digest|.h5") is None  # another format, another entry
    for entry in (tmp_path / "cache" / "sizes").iterdir():
        entry.write_text("{not json")
    assert measure.recall("digest|.keras") is None  # a damaged entry is recomputed


def test_unwritable_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PRUNECLI_CACHE_DIR", str(blocker))  # a file, not a folder
    measure.remember("k", {"size_bytes": 1, "size_gzip_bytes": 1})
    assert measure.recall("k") is None


def test_rerun_takes_the_inputs_before_figures_from_the_cache(
    cli, make_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("PRUNECLI_CACHE_DIR", str(tmp_path / "cache"))
    model = make_model("cnn", ".keras", train=False)
    args = ("prune", model, "--epochs", "0", "--sparsity", "0.5", "--force", "--json")
    first = json.loads(cli(*args).stdout)["before"]
    entries = list((tmp_path / "cache" / "sizes").iterdir())
    assert len(entries) == 1
    assert json.loads(entries[0].read_text()) == {
        "size_bytes": first["size_bytes"],
        "size_gzip_bytes": first["size_gzip_bytes"],
    }
    entries[0].write_text(json.dumps({"size_bytes": 123, "size_gzip_bytes": 45}))
    second = json.loads(cli(*args).stdout)["before"]
    assert (second["size_bytes"], second["size_gzip_bytes"]) == (123, 45)  # read, not redone


def test_pending_equals_sizes_whoever_deflates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a folder: one small file (serial stream) and one in 64 KiB parallel blocks
    monkeypatch.setattr(measure, "BLOCK", 1 << 16)
    monkeypatch.setattr(measure, "PARALLEL_MIN", 1 << 17)
    (tmp_path / "m").mkdir()
    small = _sparse_floats(tmp_path / "m" / "small.bin", 1000)
    big = _sparse_floats(tmp_path / "m" / "big.bin", 75_000)
    starts = range(0, len(big), measure.BLOCK)
    blocks = b"".join(
        measure.deflate_block(tmp_path / "m" / "big.bin", s, len(big)) for s in starts
    )
    expected = (len(small) + len(big), len(gzip.compress(small, 6)) + len(blocks) + 18)
    seen: list[tuple[int, int] | None] = []
    assert measure.Pending(tmp_path / "m", 0).result() == expected  # the caller alone
    pending = measure.Pending(tmp_path / "m", 3, on_done=seen.append)  # threads and caller
    assert pending.result() == expected == measure.sizes(tmp_path / "m")
    assert seen == [expected]  # told once, by whichever thread finished last


def test_pending_on_done_runs_without_a_caller_and_errors_reach_result(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "k.bin"
    data = _sparse_floats(path, 5000)
    finished = threading.Event()
    seen: list[tuple[int, int] | None] = []
    measure.Pending(path, 1, on_done=lambda f: (seen.append(f), finished.set()))
    assert finished.wait(30) and seen == [(len(data), len(gzip.compress(data, 6)))]
    doomed = tmp_path / "gone.bin"
    doomed.write_bytes(b"x" * 10)
    failed = measure.Pending(doomed, 0, on_done=seen.append)
    doomed.unlink()  # removed after its size was read: the deflate fails
    with pytest.raises(FileNotFoundError):
        failed.result()
    assert seen[-1] is None


def test_pending_waits_while_paused_and_its_caller_never_does(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "k.bin"
    data = _sparse_floats(path, 5000)
    finished = threading.Event()
    with measure.paused():
        measure.Pending(path, 1, on_done=lambda _: finished.set())
        assert not finished.wait(0.5)  # the background thread holds off
        held = measure.Pending(path, 1)
        assert held.result() == (len(data), len(gzip.compress(data, 6)))  # the caller works
    assert finished.wait(30)  # released when the pause ends
