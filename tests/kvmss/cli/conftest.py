"""The ``api`` fixture of the CLI tests: a recording stand-in for the controller."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kvmss.cli.fakecontroller import FakeController


@pytest.fixture
def api() -> Iterator[FakeController]:
    fake = FakeController()
    fake.start()
    yield fake
    fake.stop()
