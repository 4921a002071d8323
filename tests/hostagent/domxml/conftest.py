"""What the domain model's and the designer's tests share."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRATCH_BASE = Path("/var/tmp/kvmss-tests")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory libvirt's QEMU user can traverse (mode 0755), removed afterwards."""
    SCRATCH_BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(SCRATCH_BASE, 0o755)
    path = Path(tempfile.mkdtemp(prefix="domxml-", dir=SCRATCH_BASE))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
