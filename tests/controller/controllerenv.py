"""A controller over a real SQLite store and catalog, with an agent double,
for API-level tests (no guest runs)."""

from __future__ import annotations

from pathlib import Path

from controller.images.catalog import Catalog
from controller.service.controller import Controller, Settings
from controller.store.facade import Store
from hostagent.contract import views
from kvmss.base.clock import SystemClock
from tests.controller.agentdouble import AgentDouble


def host_view(url: str, _token: str) -> views.HostView:
    """What an agent at ``url`` (ending in its host name) says of itself."""
    return views.HostView(
        name=url.rsplit("/", 1)[-1],
        hypervisor="qemu",
        libvirtVersion="9.0.0",
        capacity=views.HostCapacity(vcpus=2, memoryMB=4096, diskFreeGB=10),
        instanceCount=0,
        bridge="b",
        subnet="10.0.0.0/24",
    )


def make_controller(tmp_path: Path, agents: AgentDouble) -> tuple[Controller, Path]:
    """The controller and its upload staging directory."""
    clock = agents.clock if isinstance(agents.clock, SystemClock) else SystemClock()
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    ctl = Controller(
        store,
        Catalog(store, tmp_path / "blobs", clock),
        agents,
        clock,
        Settings("http://127.0.0.1:1", b"s" * 32, poll_seconds=0.01),
        probe_host=host_view,
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    return ctl, staging
