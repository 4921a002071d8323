"""Truncated qcow2 uploads at the catalog, without guests (the guest scenario
image-truncated-publish cuts an image in half: refused).

``qemu-img check`` only notices clusters that reach one cluster (64 KiB) or
more past the end of the file, so an upload that lost its last few bytes
(a dropped connection the client did not notice) passes the check, and its
guests would read zeros or I/O errors where the last cluster was. Only the
publisher's own sha256 can tell: the catalog takes it (``?sha256=``, sent by
``kvmss image publish`` from the build manifest) and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from controller.images.catalog import Catalog, CatalogError
from controller.store.facade import Store
from kvmss.base import qemuimg
from kvmss.base.clock import FakeClock

MiB = 1 << 20


def _image(where: Path, cut: int) -> Path:
    """A 16 MiB qcow2 holding 1 MiB of random data, minus its last ``cut`` bytes."""
    raw = where / "data.raw"
    with raw.open("wb") as f:
        f.write(os.urandom(MiB))
        f.truncate(16 * MiB)
    out = where / "disk.qcow2"
    qemuimg.convert(raw, out, src_format="raw")
    os.truncate(out, out.stat().st_size - cut)
    return out


def _publish(tmp_path: Path, disk: Path, sha256: str | None = None) -> None:
    clock = FakeClock(start=1_718_000_000.0)
    store = Store.open(f"sqlite:///{tmp_path / 'kvmss.db'}", clock=clock)
    try:
        catalog = Catalog(store, tmp_path / "blobs", clock)
        catalog.publish("kvmss", "tiny", "1", "3", disk, sha256=sha256)
    finally:
        store.close()


def test_an_upload_cut_by_clusters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as ei:
        _publish(tmp_path, _image(tmp_path, 512 << 10))
    assert ei.value.code == "CheckFailed"
    assert not any((tmp_path / "blobs").iterdir())


def test_an_upload_cut_by_a_few_bytes_passes_the_check_but_not_the_sha256(
    tmp_path: Path,
) -> None:
    whole = _image(tmp_path, 0)
    expected = hashlib.sha256(whole.read_bytes()).hexdigest()
    os.truncate(whole, whole.stat().st_size - 1000)
    assert qemuimg.check(whole).ok  # what the check alone cannot see
    with pytest.raises(CatalogError) as ei:
        _publish(tmp_path, whole, sha256=expected)
    assert ei.value.code == "Sha256Mismatch" and ei.value.status == 422
    assert "cut short" in ei.value.message
    assert not any((tmp_path / "blobs").iterdir())
    # The same bytes with their own digest publish: the refusal was the digest's.
    _publish(tmp_path, whole, sha256=hashlib.sha256(whole.read_bytes()).hexdigest())
