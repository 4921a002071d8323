"""The store's tests run against a real SQLite file on an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.store.facade import (
    Store,
)
from kvmss.base.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'kvmss.db'}"


@pytest.fixture
def store(url: str, clock: FakeClock) -> Iterator[Store]:
    s = Store.open(url, clock=clock)
    yield s
    s.close()
