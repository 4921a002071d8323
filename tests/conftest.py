"""Suite-wide pytest hooks.

Guest tests share labs through module fixtures, and the fault scenarios share
one lab per pytest process (``tests.faults.lab.shared_lab``). So that a run of
the guest tests on several pytest-xdist workers (``--dist loadgroup``) boots
each lab once, every guest test is put in one xdist group per module, and all
of ``tests/faults`` in one group. Without ``--dist loadgroup`` the groups do
nothing.

Before anything runs, what killed runs left under the test root (domains,
agents, bridges, mounts: tests.leftovers) is removed, once per run (not in
each xdist worker).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import leftovers
from tests.fixtures import TEST_ROOT

FAULTS = Path(__file__).parent / "faults"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("guest") is None:
            continue
        if item.get_closest_marker("xdist_group") is not None:
            continue
        group = "faults" if FAULTS in item.path.parents else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionstart(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controlling process swept already
    removed = leftovers.sweep(TEST_ROOT)
    if removed:
        print(f"removed what killed test runs left: {', '.join(removed)}")
