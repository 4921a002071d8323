"""Test helpers shared by the suites: a storage root libvirt's QEMU user can
traverse, a real HTTP file server on loopback, and small real qcow2 images."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kvmss.base import qemuimg
from tests.leftovers import mark_owner

TEST_ROOT = Path(os.environ.get("KVMSS_TEST_ROOT", "/var/tmp/kvmss-tests"))


@contextmanager
def storage_root(prefix: str = "t") -> Iterator[Path]:
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(TEST_ROOT, 0o755)
    d = TEST_ROOT / f"{prefix}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    os.chmod(d, 0o755)
    mark_owner(d)  # a killed run's leftovers are swept by the next (tests.leftovers)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_qcow2(path: Path, marker: bytes, size_mib: int = 8) -> str:
    """A small real qcow2 whose first bytes are ``marker``; returns its sha256."""
    raw = path.with_suffix(".raw")
    with raw.open("wb") as f:
        f.truncate(size_mib << 20)
        f.seek(0)
        f.write(marker)
    qemuimg.convert(raw, path, src_format="raw", dst_format="qcow2")
    raw.unlink()
    return sha256_file(path)
