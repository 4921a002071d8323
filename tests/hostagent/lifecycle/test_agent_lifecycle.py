"""The agent's lifecycle and API against libvirt's test:///default driver (no
guest runs): real qcow2 overlays, real seed ISOs, real downloads over HTTP,
real domain definitions in libvirt."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bench.served import FileServer
from hostagent.contract import instancespec, operations
from hostagent.daemon.api import create_app
from hostagent.daemon.config import AgentConfig
from hostagent.daemon.guestapi import create_guest_app
from hostagent.daemon.service import Agent
from hostagent.domxml.domain import Domain
from hostagent.guest.seed import read_seed_iso
from hostagent.lifecycle import faults
from kvmss.base import qemuimg
from kvmss.base.clock import SystemClock
from tests.fixtures import make_qcow2, sha256_file, storage_root

TOKEN = "agent-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Env:
    root: Path
    files: FileServer
    agent: Agent
    api: TestClient
    images: dict[str, instancespec.ImageSpec]

    def restart(self) -> None:
        """A new agent process on the same storage (the test driver's state is
        kept while this process holds a connection)."""
        self.agent = Agent.build(self.agent.config)
        self.agent.start()
        self.api = TestClient(create_app(self.agent))


def image(files: FileServer, dirpath: Path, version: str) -> instancespec.ImageSpec:
    p = dirpath / f"base-{version}.qcow2"
    sha = make_qcow2(p, f"kvmss base {version}".encode())
    return instancespec.ImageSpec(
        reference=instancespec.ImageReference(
            publisher="kvmss", offer="tiny", sku="1", version=version
        ),
        url=files.url(p.name),
        sha256=sha,
    )


@pytest.fixture
def env() -> Iterator[Env]:
    with storage_root("agent") as root:
        served = root / "served"
        served.mkdir()
        files = FileServer(served)
        cfg = AgentConfig.from_dict(
            {
                "name": "host-a",
                "token": TOKEN,
                "libvirt_uri": "test:///default",
                "storage_dir": str(root / "agent"),
                "bridge": {"name": "kvt0", "subnet": "10.250.0.0/24"},
            }
        )
        agent = Agent.build(cfg, SystemClock())
        agent.start()
        e = Env(
            root=root,
            files=files,
            agent=agent,
            api=TestClient(create_app(agent)),
            images={v: image(files, served, v) for v in ("1", "2")},
        )
        try:
            yield e
        finally:
            for d in e.agent.hv.owned():
                e.agent.hv.undefine(d.name)
            e.agent.stop()
            files.close()


def spec(env: Env, version: str = "1", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": env.images[version].model_dump(mode="json", exclude_none=True),
        "dataDisks": [{"lun": 0, "diskSizeGB": 1}, {"lun": 1, "diskSizeGB": 2}],
        "osProfile": {"computerName": "web-0", "customData": "c2VjcmV0LWN1c3RvbS1kYXRh"},
        "extensions": [
            {"name": "app", "settings": {"commandToExecute": "echo app"}},
            {
                "name": "marker",
                "settings": {"commandToExecute": "echo hi > /data/m"},
                "provisionAfterExtensions": ["app"],
            },
        ],
    }
    body.update(kw)
    return body


def wait(env: Env, resp: Any, api: TestClient | None = None) -> dict[str, Any]:
    assert resp.status_code == 202, resp.text
    op = operations.Operation(**resp.json())
    for _ in range(400):
        got = (api or env.api).get(f"/v1/operations/{op.id}", headers=AUTH).json()
        if got["status"] != "InProgress":
            return dict(got)
        SystemClock().sleep(0.01)
    raise AssertionError("operation did not finish")


def name() -> str:
    return f"vm-{uuid.uuid4().hex[:8]}"


def create(env: Env, n: str, **kw: Any) -> dict[str, Any]:
    op = wait(env, env.api.put(f"/v1/instances/{n}", json=spec(env, **kw), headers=AUTH))
    assert op["status"] == "Succeeded", op
    return dict(env.api.get(f"/v1/instances/{n}", headers=AUTH).json())


def test_create_defines_a_domain_with_overlay_seed_and_data_disks(env: Env) -> None:
    n = name()
    view = create(env, n)
    assert view["current"]["generation"] == 1
    assert view["previous"] is None
    assert view["powerState"] == "running"
    os_disk = Path(view["current"]["osDisk"])
    info = qemuimg.info(os_disk)
    base = env.agent.layout.cache_dir / env.images["1"].sha256
    assert info.backing_file == str(base)
    assert [d["lun"] for d in view["dataDisks"]] == [0, 1]
    for d in view["dataDisks"]:
        assert qemuimg.info(Path(d["path"])).virtual_size == d["diskSizeGB"] << 30
    seed = read_seed_iso(env.agent.layout.seed(n, 1))
    assert f"instance-id: {view['current']['instanceId']}" in seed.meta_data
    assert view["address"] in seed.network_config
    assert seed.user_data.startswith("MIME-Version: 1.0\n")
    assert "Content-Type: text/x-shellscript" in seed.user_data
    assert "\n#!/bin/sh\n" in seed.user_data
    # extensions are expected in provisionAfterExtensions order, none reported yet
    assert [(e["name"], e["status"]) for e in view["extensions"]] == [
        ("app", "NotStarted"),
        ("marker", "NotStarted"),
    ]
    assert view["health"]["state"] == "Unknown"


def test_generated_domain_xml_passes_virt_xml_validate(env: Env) -> None:
    n = name()
    create(env, n)
    xml = env.agent.hv.get(n)
    assert xml is not None
    f = env.root / "dom.xml"
    # validate the XML as we generate it for qemu (the test driver's copy says type=test)
    f.write_text(Domain.from_xml(xml.to_xml()).to_xml().replace("type='test'", "type='qemu'"))
    r = subprocess.run(["virt-xml-validate", str(f), "domain"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_reimage_rollback_commit_keep_data_disk_bytes(env: Env) -> None:
    n = name()
    view = create(env, n)
    data = [Path(d["path"]) for d in view["dataDisks"]]
    before = [sha256_file(p) for p in data]
    first_id = view["current"]["instanceId"]

    body = {"image": env.images["2"].model_dump(mode="json", exclude_none=True)}
    op = wait(env, env.api.post(f"/v1/instances/{n}/reimage", json=body, headers=AUTH))
    assert op["status"] == "Succeeded", op
    v2 = env.api.get(f"/v1/instances/{n}", headers=AUTH).json()
    assert v2["current"]["generation"] == 2
    assert v2["current"]["image"]["version"] == "2"
    assert v2["previous"]["generation"] == 1
    assert v2["current"]["instanceId"] != first_id
    assert Path(v2["previous"]["osDisk"]).exists()
    seed2 = read_seed_iso(env.agent.layout.seed(n, 2))
    assert v2["current"]["instanceId"] in seed2.meta_data

    op = wait(env, env.api.post(f"/v1/instances/{n}/rollback", json={}, headers=AUTH))
    assert op["status"] == "Succeeded", op
    v1 = env.api.get(f"/v1/instances/{n}", headers=AUTH).json()
    assert v1["current"]["generation"] == 1
    assert v1["current"]["instanceId"] == first_id
    assert v1["previous"] is None
    assert not env.agent.layout.os_disk(n, 2).exists()
    assert not env.agent.layout.seed(n, 2).exists()

    # reimage again, then commit drops the previous disk
    op = wait(env, env.api.post(f"/v1/instances/{n}/reimage", json=body, headers=AUTH))
    v3 = env.api.get(f"/v1/instances/{n}", headers=AUTH).json()
    # generation 2 was rolled back and its files removed: the number is free again
    assert v3["current"]["generation"] == 2
    assert v3["current"]["instanceId"] not in (first_id, v2["current"]["instanceId"])
    op = wait(env, env.api.post(f"/v1/instances/{n}/commit", headers=AUTH))
    assert op["status"] == "Succeeded", op
    v3 = env.api.get(f"/v1/instances/{n}", headers=AUTH).json()
    assert v3["previous"] is None
    assert not env.agent.layout.os_disk(n, 1).exists()
    assert sorted(p.name for p in env.agent.layout.instance_dir(n).glob("os-*")) == ["os-2.qcow2"]
    assert [sha256_file(p) for p in data] == before
    # the disks of the domain are what the metadata says
    dom = env.agent.hv.get(n)
    assert dom is not None
    paths = {d.target: d.path for d in dom.disks}
    assert paths["vda"] == str(env.agent.layout.os_disk(n, 2))
    assert paths["vdb"] == str(data[0])
    assert paths["vdc"] == str(data[1])


def test_rollback_without_previous_is_409(env: Env) -> None:
    n = name()
    create(env, n)
    r = env.api.post(f"/v1/instances/{n}/rollback", json={}, headers=AUTH)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "NoPreviousOsDisk"


def test_put_again_is_idempotent_and_adds_data_disks(env: Env) -> None:
    n = name()
    view = create(env, n)
    body = spec(env, dataDisks=[{"lun": 0, "diskSizeGB": 1}, {"lun": 3, "diskSizeGB": 1}])
    op = wait(env, env.api.put(f"/v1/instances/{n}", json=body, headers=AUTH))
    assert op["status"] == "Succeeded"
    again = env.api.get(f"/v1/instances/{n}", headers=AUTH).json()
    assert again["current"] == view["current"]
    # lun 1 is not in the new spec but is never removed; lun 3 is added
    assert [d["lun"] for d in again["dataDisks"]] == [0, 1, 3]


def test_same_operation_id_returns_the_same_operation(env: Env) -> None:
    n = name()
    body = spec(env, operationId="op-fixed-1")
    r1 = env.api.put(f"/v1/instances/{n}", json=body, headers=AUTH)
    r2 = env.api.put(f"/v1/instances/{n}", json=body, headers=AUTH)
    assert r1.json()["id"] == r2.json()["id"] == "op-fixed-1"
    wait(env, r1)
    assert len([d for d in env.agent.hv.owned() if d.name == n]) == 1


def test_delete_keeps_data_disks_unless_asked(env: Env) -> None:
    n = name()
    view = create(env, n)
    op = wait(env, env.api.delete(f"/v1/instances/{n}", headers=AUTH))
    assert op["status"] == "Succeeded"
    assert env.agent.hv.get(n) is None
    kept = [Path(d["path"]) for d in view["dataDisks"]]
    assert all(p.exists() for p in kept)
    assert not env.agent.layout.os_disk(n, 1).exists()
    # a new instance of the same name gets its data disks back
    again = create(env, n)
    assert [d["path"] for d in again["dataDisks"]] == [str(p) for p in kept]
    op = wait(
        env, env.api.delete(f"/v1/instances/{n}", params={"deleteDataDisks": "true"}, headers=AUTH)
    )
    assert not any(p.exists() for p in kept)


# -- guest reports ---------------------------------------------------------------


def test_guest_reports_need_the_instance_token_and_current_instance_id(env: Env) -> None:
    a, b = name(), name()
    va, _vb = create(env, a), create(env, b)
    guest = TestClient(create_guest_app(env.agent))
    iid = va["current"]["instanceId"]
    url = f"/v1/guest/instances/{a}/extensions/app"
    good = {"Authorization": f"Bearer {env.agent.tokens.token(a)}"}
    body = {"instanceId": iid, "status": "Succeeded", "exitCode": 0, "outputBase64": "aGk="}
    assert guest.post(url, json=body).status_code == 401
    other = {"Authorization": f"Bearer {env.agent.tokens.token(b)}"}
    assert guest.post(url, json=body, headers=other).status_code == 401
    assert guest.post(url, json=body, headers=AUTH).status_code == 401
    stale = {**body, "instanceId": "i-old"}
    assert guest.post(url, json=stale, headers=good).status_code == 409
    assert (
        guest.post(f"/v1/guest/instances/{a}/extensions/zzz", json=body, headers=good).status_code
        == 404
    )
    assert guest.post(url, json=body, headers=good).status_code == 204
    fail = {"instanceId": iid, "status": "Failed", "exitCode": 3}
    r = guest.post(f"/v1/guest/instances/{a}/extensions/marker", json=fail, headers=good)
    assert r.status_code == 204
    view = env.api.get(f"/v1/instances/{a}", headers=AUTH).json()
    exts = {e["name"]: e for e in view["extensions"]}
    assert exts["app"]["status"] == "Succeeded" and exts["app"]["message"] == "hi"
    assert exts["marker"]["status"] == "Failed" and exts["marker"]["exitCode"] == 3
    assert view["health"]["state"] == "Unhealthy"
    assert "extension marker failed (exit code 3)" in view["health"]["reasons"]
    # the management API is not served by the guest listener
    assert guest.get("/v1/instances", headers=AUTH).status_code == 404


def test_extensions_succeeded_and_running_is_healthy(env: Env) -> None:
    n = name()
    view = create(env, n)
    guest = TestClient(create_guest_app(env.agent))
    good = {"Authorization": f"Bearer {env.agent.tokens.token(n)}"}
    for ext in ("app", "marker"):
        body = {"instanceId": view["current"]["instanceId"], "status": "Succeeded", "exitCode": 0}
        r = guest.post(f"/v1/guest/instances/{n}/extensions/{ext}", json=body, headers=good)
        assert r.status_code == 204
    view = env.api.get(f"/v1/instances/{n}", headers=AUTH).json()
    assert view["health"] == {"state": "Healthy", "reasons": []}
    wait(env, env.api.post(f"/v1/instances/{n}/stop", headers=AUTH))
    view = env.api.get(f"/v1/instances/{n}", headers=AUTH).json()
    assert view["health"]["state"] == "Unhealthy"
    assert view["powerState"] == "stopped"


def test_a_guest_token_that_is_not_ascii_is_401(env: Env) -> None:
    # regression: the token comparison raised TypeError (a 500) on non-ASCII
    n = name()
    create(env, n)
    guest = TestClient(create_guest_app(env.agent))
    r = guest.post(
        f"/v1/guest/instances/{n}/health",
        json={"instanceId": "i-1", "state": "Healthy"},
        headers={"Authorization": b"Bearer caf\xc3\xa9"},
    )
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "Unauthorized"


# -- domains kvmss does not own --------------------------------------------------


def foreign_domain_xml(name: str) -> str:
    """A domain kvmss did not define, and whose XML it does not model."""
    return f"""<domain type='test'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/{name}.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>"""


def test_a_domain_kvmss_does_not_own_is_404_and_left_alone(env: Env) -> None:
    # regression: its XML (a disk without <driver>) made GET a 500; a create
    # of its name left files behind, and a delete then undefined the domain
    env.agent.hv.conn().defineXML(foreign_domain_xml("foreign-vm"))
    try:
        r = env.api.get("/v1/instances/foreign-vm", headers=AUTH)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "NotFound"
        op = wait(env, env.api.put("/v1/instances/foreign-vm", json=spec(env), headers=AUTH))
        assert op["status"] == "Failed"
        assert op["error"]["code"] == "Conflict"
        assert "not a kvmss instance" in op["error"]["message"]
        assert not env.agent.layout.instance_dir("foreign-vm").exists()
        env.agent.layout.instance_dir("foreign-vm").mkdir(parents=True)  # a leftover
        op = wait(env, env.api.delete("/v1/instances/foreign-vm", headers=AUTH))
        assert op["status"] == "Succeeded"
        assert env.agent.hv.state("foreign-vm") != "absent"
        assert not env.agent.layout.instance_dir("foreign-vm").exists()
    finally:
        env.agent.hv.conn().lookupByName("foreign-vm").undefine()


# -- crash recovery (in process: the worker dies at each step) -------------------


class _Killed(BaseException):
    """Stands in for SIGKILL inside one process: nothing after it runs."""


REIMAGE_STEPS = ["prepared", "stopped", "swapped", "started"]


@pytest.mark.parametrize("step", REIMAGE_STEPS)
def test_reimage_interrupted_at_each_step_settles_on_restart(
    env: Env, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = name()
    create(env, n)

    died = threading.Event()

    def die(kind: str, at: str) -> None:
        if (kind, at) == ("reimage", step):
            died.set()
            raise _Killed

    monkeypatch.setattr("hostagent.lifecycle.reimage.crash_point", die)
    body = {"image": env.images["2"].model_dump(mode="json", exclude_none=True)}
    r = env.api.post(f"/v1/instances/{n}/reimage", json=body, headers=AUTH)
    op_id = r.json()["id"]
    assert died.wait(10)
    SystemClock().sleep(0.05)
    monkeypatch.setattr("hostagent.lifecycle.reimage.crash_point", faults.crash_point)
    assert env.agent.ops.get(op_id).status == "InProgress"  # type: ignore[union-attr]
    env.agent.prober.stop()
    env.restart()
    op = env.api.get(f"/v1/operations/{op_id}", headers=AUTH).json()
    view = env.api.get(f"/v1/instances/{n}", headers=AUTH).json()
    swapped = step in ("swapped", "started")
    assert op["status"] == ("Succeeded" if swapped else "Failed"), op
    assert view["current"]["generation"] == (2 if swapped else 1)
    assert view["powerState"] == "running"
    on_disk = sorted(p.name for p in env.agent.layout.instance_dir(n).glob("os-*"))
    assert on_disk == (["os-1.qcow2", "os-2.qcow2"] if swapped else ["os-1.qcow2"])
    assert env.agent.instances.journal.get(n) is None


def test_missing_test_root_is_cleaned(env: Env) -> None:
    # the storage root is created with modes libvirt's QEMU user can traverse
    assert (env.agent.layout.root.stat().st_mode & 0o777) == 0o755
    assert (env.agent.layout.journal_dir.stat().st_mode & 0o777) == 0o700
    assert shutil.which("virt-xml-validate")


def test_finished_operations_are_forgotten_after_a_week(env: Env) -> None:
    import os

    from hostagent.lifecycle.operations import RETENTION_SECONDS, Operations

    n = name()
    create(env, n)
    old = wait(env, env.api.post(f"/v1/instances/{n}/stop", headers=AUTH))
    recent = wait(env, env.api.post(f"/v1/instances/{n}/start", headers=AUTH))
    opdir = env.agent.layout.operations_dir
    week_ago = SystemClock().now() - RETENTION_SECONDS - 60
    os.utime(opdir / f"{old['id']}.json", (week_ago, week_ago))
    ops = Operations(opdir, SystemClock())
    assert ops.get(old["id"]) is None
    assert ops.get(recent["id"]) is not None
    assert not (opdir / f"{old['id']}.json").exists()
    ops.shutdown()


def test_two_agents_on_one_libvirt_see_only_their_own_instances(env: Env) -> None:
    """Agents sharing a libvirtd (labs, tests) own the domains whose OS disk
    is under their storage directory, and never touch another's."""
    n = name()
    create(env, n)
    other_cfg = AgentConfig.from_dict(
        {
            "name": "host-b",
            "token": TOKEN,
            "libvirt_uri": "test:///default",
            "storage_dir": str(env.root / "agent-b"),
            "bridge": {"name": "kvt1", "subnet": "10.251.0.0/24"},
        }
    )
    other = Agent.build(other_cfg, SystemClock())
    other.start()
    try:
        api = TestClient(create_app(other))
        assert n not in [v["name"] for v in api.get("/v1/instances", headers=AUTH).json()["value"]]
        assert api.get(f"/v1/instances/{n}", headers=AUTH).status_code == 404
        op = wait(env, api.put(f"/v1/instances/{n}", json=spec(env), headers=AUTH), api)
        assert op["status"] == "Failed"
        assert op["error"]["code"] == "Conflict", op
        # Still the first agent's, untouched.
        view = env.api.get(f"/v1/instances/{n}", headers=AUTH).json()
        assert view["current"]["generation"] == 1
        assert env.agent.hv.get(n) is not None
    finally:
        other.stop()
