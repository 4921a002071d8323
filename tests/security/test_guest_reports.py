"""A guest reports for its own instance only.

A real agent (libvirt's test:///default driver: no guest runs) serves its
guest listener over TCP on the gateway address of a real bridge, which also
holds the addresses of instances A and B, so this test sends from exactly
the addresses guests A and B would send from. Instance A's token cannot
report for B, nor for A's previous instance-id after a reimage, nor from B's
address (or the host's), nor through a forwarding header; and nothing of B's
is changed by any of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bench.served import free_port
from hostagent.daemon.server import AgentServer
from tests.fixtures import storage_root
from tests.security.agentenv import AGENT_AUTH, AgentEnv, agent_env
from tests.security.hostnet import HostBridge, host_bridge, post_from


@dataclass
class Lab:
    env: AgentEnv
    net: HostBridge
    port: int
    addr: dict[str, str]  # instance name -> its address
    token: dict[str, str]  # instance name -> its guest token

    def report(
        self,
        source: str,
        instance: str,
        body: dict[str, Any],
        token: str | None,
        kind: str = "extensions/app",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        path = f"/v1/guest/instances/{instance}/{kind}"
        return post_from(
            source, self.net.gateway, self.port, path, body, {**auth, **(headers or {})}
        )

    def view(self, name: str) -> dict[str, Any]:
        got: dict[str, Any] = self.env.api.get(f"/v1/instances/{name}", headers=AGENT_AUTH).json()
        return got


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    port = free_port()
    with (
        storage_root("sec-reports") as root,
        host_bridge() as net,
        agent_env(root, str(net.subnet), net.name, guest_port=port) as env,
    ):
        server = AgentServer(env.agent)  # the guest listener on the bridge address
        server.start_background()
        try:
            views = {n: env.create(n) for n in ("guest-a", "guest-b")}
            for v in views.values():
                net.add_address(v["address"])
            yield Lab(
                env,
                net,
                port,
                {n: v["address"] for n, v in views.items()},
                {n: env.agent.tokens.token(n) for n in views},
            )
        finally:
            server.stop()


def ext(instance_id: str, status: str = "Succeeded") -> dict[str, Any]:
    return {"instanceId": instance_id, "status": status, "exitCode": 0, "outputBase64": "b2s="}


def test_a_token_reports_for_its_own_instance_from_its_own_address(lab: Lab) -> None:
    a, b = "guest-a", "guest-b"
    a_id = lab.view(a)["current"]["instanceId"]
    b_before = lab.view(b)
    b_id = b_before["current"]["instanceId"]
    a_addr, b_addr, gw = lab.addr[a], lab.addr[b], lab.net.gateway
    assert a_addr != b_addr

    # A's token for B: from A's address or from B's, extension or health report
    for source in (a_addr, b_addr):
        status, body = lab.report(source, b, ext(b_id), lab.token[a])
        assert status == 401 and body["error"]["code"] == "Unauthorized", (source, body)
        health = {"instanceId": b_id, "state": "Unhealthy"}
        status, _ = lab.report(source, b, health, lab.token[a], "health")
        assert status == 401, source
    # A's token for A from B's address, or from the host's own gateway address
    for source in (b_addr, gw):
        status, body = lab.report(source, a, ext(a_id), lab.token[a])
        assert status == 403 and body["error"]["code"] == "Forbidden", (source, body)
    # B's stolen token used from A's address
    status, _ = lab.report(a_addr, b, ext(b_id, "Failed"), lab.token[b])
    assert status == 403
    # A forwarding header naming A's address does not make B's address A's,
    # from B's address nor from the host's loopback (which uvicorn trusts)
    for source in (b_addr, "127.0.0.1"):
        for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
            value = f"for={a_addr}" if header == "Forwarded" else a_addr
            status, _ = lab.report(source, a, ext(a_id), lab.token[a], headers={header: value})
            assert status == 403, (source, header)
    # nor does coming from outside the guest subnet (the host's loopback)
    status, _ = lab.report("127.0.0.1", a, ext(a_id), lab.token[a])
    assert status == 403

    # the allowed path: A, from A's address, with A's token, for A's current instance-id
    status, _ = lab.report(a_addr, a, ext(a_id), lab.token[a])
    assert status == 204
    assert {e["name"]: e["status"] for e in lab.view(a)["extensions"]} == {"app": "Succeeded"}
    b_after = lab.view(b)
    assert b_after["extensions"] == b_before["extensions"]
    assert [e["status"] for e in b_after["extensions"]] == ["NotStarted"]
    assert b_after["applicationHealth"] is None


def test_a_previous_instance_id_cannot_report_after_a_reimage(lab: Lab) -> None:
    a = "guest-a"
    old_id = lab.view(a)["current"]["instanceId"]
    body = {"image": lab.env.spec("2")["image"]}
    op = lab.env.wait(lab.env.api.post(f"/v1/instances/{a}/reimage", json=body, headers=AGENT_AUTH))
    assert op["status"] == "Succeeded", op
    view = lab.view(a)
    new_id = view["current"]["instanceId"]
    assert new_id != old_id and view["previous"]["instanceId"] == old_id

    src, token = lab.addr[a], lab.token[a]
    status, body = lab.report(src, a, ext(old_id, "Succeeded"), token)
    assert status == 409 and body["error"]["code"] == "StaleInstanceId", body
    status, body = lab.report(src, a, {"instanceId": old_id, "state": "Healthy"}, token, "health")
    assert status == 409, body
    view = lab.view(a)
    assert [e["status"] for e in view["extensions"]] == ["NotStarted"]
    assert view["applicationHealth"] is None
    # the current one still can
    status, _ = lab.report(src, a, ext(new_id), token)
    assert status == 204
    assert [e["status"] for e in lab.view(a)["extensions"]] == ["Succeeded"]
