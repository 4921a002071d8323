"""A real agent on libvirt's test:///default driver (no guest runs), in this
process, with its management and guest apps behind TestClients, real qcow2
base images served over HTTP and real domain definitions in libvirt."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bench.served import FileServer
from hostagent.contract import instancespec
from hostagent.daemon.api import create_app
from hostagent.daemon.config import AgentConfig
from hostagent.daemon.guestapi import create_guest_app
from hostagent.daemon.service import Agent
from kvmss.base.clock import SystemClock
from tests.fixtures import make_qcow2

AGENT_TOKEN = "agent-token-sec-3f9a1c0d7e5b4a2968"
AGENT_AUTH = {"Authorization": f"Bearer {AGENT_TOKEN}"}


@dataclass
class AgentEnv:
    root: Path
    files: FileServer
    agent: Agent
    api: TestClient
    guest: TestClient
    images: dict[str, instancespec.ImageSpec]

    def spec(self, version: str = "1", **kw: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "image": self.images[version].model_dump(mode="json", exclude_none=True),
            "dataDisks": [{"lun": 0, "diskSizeGB": 1}],
            "osProfile": {"computerName": "web-0"},
            "extensions": [{"name": "app", "settings": {"commandToExecute": "echo app"}}],
        }
        body.update(kw)
        return body

    def wait(self, resp: Any) -> dict[str, Any]:
        assert resp.status_code == 202, resp.text
        op_id = resp.json()["id"]
        for _ in range(1000):
            got: dict[str, Any] = self.api.get(f"/v1/operations/{op_id}", headers=AGENT_AUTH).json()
            if got["status"] != "InProgress":
                return got
            SystemClock().sleep(0.01)
        raise AssertionError(f"operation {op_id} did not finish")

    def create(self, name: str, **kw: Any) -> dict[str, Any]:
        r = self.api.put(f"/v1/instances/{name}", json=self.spec(**kw), headers=AGENT_AUTH)
        op = self.wait(r)
        assert op["status"] == "Succeeded", op
        view: dict[str, Any] = self.api.get(f"/v1/instances/{name}", headers=AGENT_AUTH).json()
        return view

    def domain_xml(self, name: str) -> str:
        xml: str = self.agent.hv.conn().lookupByName(name).XMLDesc(0)
        return xml


def unique_name(prefix: str = "vm") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def base_image(files: FileServer, served: Path, version: str) -> instancespec.ImageSpec:
    p = served / f"base-{version}.qcow2"
    sha = make_qcow2(p, f"kvmss base {version}".encode())
    return instancespec.ImageSpec(
        reference=instancespec.ImageReference(
            publisher="kvmss", offer="tiny", sku="1", version=version
        ),
        url=files.url(p.name),
        sha256=sha,
    )


@contextmanager
def agent_env(
    root: Path, subnet: str = "10.251.0.0/24", bridge: str = "kvsec0", **config: Any
) -> Iterator[AgentEnv]:
    """The agent keeps its files in ``root/agent``; images are served from
    ``root/served``; ``config`` adds to the agent's configuration."""
    served = root / "served"
    served.mkdir()
    files = FileServer(served)
    cfg = AgentConfig.from_dict(
        {
            "name": "host-sec",
            "token": AGENT_TOKEN,
            "libvirt_uri": "test:///default",
            "storage_dir": str(root / "agent"),
            "bridge": {"name": bridge, "subnet": subnet},
            **config,
        }
    )
    agent = Agent.build(cfg, SystemClock())
    agent.start()
    env = AgentEnv(
        root=root,
        files=files,
        agent=agent,
        api=TestClient(create_app(agent)),
        guest=TestClient(create_guest_app(agent)),
        images={v: base_image(files, served, v) for v in ("1", "2")},
    )
    try:
        yield env
    finally:
        for d in agent.hv.owned():
            agent.hv.undefine(d.name)
        agent.stop()
        files.close()
