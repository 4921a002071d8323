"""kvmss.lab.files: where a lab lives by default."""

from __future__ import annotations

from pathlib import Path

from kvmss.lab import files
from kvmss.lab.files import resolve_dir


def test_default_dir_is_absolute_and_in_the_checkout() -> None:
    d = resolve_dir(None)
    assert d.is_absolute()
    assert d == files.REPO / "build" / "lab"
    assert resolve_dir(Path("rel")) == Path.cwd() / "rel"
