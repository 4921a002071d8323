"""``kvmss host`` without SSH: register, list and remove agents (against the
stand-in controller of tests.kvmss.cli.fakecontroller)."""

from __future__ import annotations

from pathlib import Path

from tests.kvmss.cli.fakecontroller import AGENT_TOKEN, FakeController, Reply, rows, run


def test_host_add_list_remove(api: FakeController, tmp_path: Path) -> None:
    token_file = tmp_path / "agent.token"
    token_file.write_text(AGENT_TOKEN + "\n")
    view = {
        "name": "host1",
        "url": "http://10.0.0.5:8090",
        "hypervisor": "qemu",
        "capacity": {"vCPUs": 8, "memoryMB": 16384},
        "instanceCount": 3,
        "reachable": True,
    }
    api.on("POST", "/v1/hosts", Reply(201, view))
    api.on("GET", "/v1/hosts", Reply(200, {"value": [view]}))
    api.on("DELETE", "/v1/hosts/host1", Reply(204))

    r = run(
        api, "host", "add", "host1", "--url", "http://10.0.0.5:8090",
        "--agent-token-file", str(token_file),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    add = api.requests[-1]
    assert add.headers["content-type"] == "application/json"
    assert add.json() == {"name": "host1", "url": "http://10.0.0.5:8090", "token": AGENT_TOKEN}

    r = run(api, "host", "list")
    assert rows(r.stdout)[2] == [
        "host1",
        "http://10.0.0.5:8090",
        "qemu",
        "vCPUs=8 memoryMB=16384",
        "3",
        "yes",
    ]
    r = run(api, "host", "remove", "host1")
    assert r.exit_code == 0
    assert (api.requests[-1].method, api.requests[-1].path) == ("DELETE", "/v1/hosts/host1")
