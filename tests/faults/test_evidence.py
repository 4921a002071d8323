"""The fault scenarios' byte count of a data disk's change: sparse raw
copies compared byte by byte over their data extents (holes read as zeros)."""

from __future__ import annotations

from pathlib import Path

from tests.faults.evidence import bytes_changed

SIZE = 64 << 20


def sparse(path: Path, writes: dict[int, bytes]) -> Path:
    with path.open("wb") as f:
        f.truncate(SIZE)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)
    return path


def test_counts_only_the_bytes_that_differ(tmp_path: Path) -> None:
    marker = b"KVMSS-LUN1 " + bytes(range(256)) * 64
    a = sparse(tmp_path / "a.raw", {0: marker, 40 << 20: b"x" * 5000})
    same = sparse(tmp_path / "same.raw", {0: marker, 40 << 20: b"x" * 5000})
    assert bytes_changed(a, same) == 0
    flipped = bytearray(marker)
    flipped[3] ^= 0xFF
    flipped[len(marker) - 1] ^= 0x01
    b = sparse(tmp_path / "b.raw", {0: bytes(flipped), 40 << 20: b"x" * 5000})
    assert bytes_changed(a, b) == 2
    # data where the other has a hole; zeros written over data
    c = sparse(tmp_path / "c.raw", {0: marker, 40 << 20: b"x" * 5000, 60 << 20: b"new"})
    assert bytes_changed(a, c) == 3
    d = sparse(tmp_path / "d.raw", {0: marker, 40 << 20: b"\0" * 5000})
    assert bytes_changed(a, d) == 5000
    # a disk recreated empty: every non-zero byte is gone
    nonzero = sum(1 for x in marker if x) + 5000
    assert bytes_changed(a, sparse(tmp_path / "e.raw", {})) == nonzero
