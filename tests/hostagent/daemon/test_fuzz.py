"""Schema-driven fuzzing of the agent's management API (see tests/apifuzz.py):
every operation, authenticated and not, with generated path and query
parameters and JSON bodies, on libvirt's test:///default driver (no guest
boots). Image and boot-file URLs in generated specs are pointed at a local
file server (a real image, a wrong sha256, a missing file), and any other
name lookup is refused, so nothing leaves the machine. No response may be a
5xx or a malformed error, and no operation the fuzz started may crash
(end as an InternalError), nor touch a domain kvmss does not own. Every
domain the test defined is undefined at the end.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import libvirt
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import strategies as st

from bench.served import FileServer
from hostagent.contract import operations
from hostagent.daemon.api import create_app
from hostagent.daemon.config import AgentConfig
from hostagent.daemon.service import Agent
from kvmss.base.clock import SystemClock
from tests.apifuzz import CaseMapper, Draw, FuzzCase, Observer, fuzz_app, known_values
from tests.fixtures import make_qcow2, sha256_file, storage_root
from tests.hostagent.lifecycle.test_agent_lifecycle import foreign_domain_xml

TOKEN = "agent-fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SUBNET = "10.251.0.0/24"
EXAMPLES_PER_MODE = 60
MIN_REQUESTS = 2000
KNOWN_INSTANCE = "fz-known"
# A domain on the host that kvmss did not define (and whose XML it does not
# model): the fuzz must neither choke on it nor touch it.
FOREIGN = "fz-foreign"
KNOWN = {"name": [KNOWN_INSTANCE, KNOWN_INSTANCE, FOREIGN]}
REFERENCE = {"publisher": "kvmss", "offer": "tiny", "sku": "1", "version": "1"}


@dataclass
class Served:
    url: str
    sha256: str


@dataclass
class Env:
    app: FastAPI
    api: TestClient
    agent: Agent
    files: FileServer
    images: list[Served]
    boot_files: list[Served]
    operations: set[str] = field(default_factory=set)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with storage_root("fuzz") as root:
        served = root / "served"
        served.mkdir()
        files = FileServer(served)
        images = []
        for version in ("1", "2"):
            sha = make_qcow2(served / f"base-{version}.qcow2", f"fuzz base {version}".encode())
            images.append(Served(files.url(f"base-{version}.qcow2"), sha))
        (served / "vmlinuz").write_bytes(b"not really a kernel")
        boot = [Served(files.url("vmlinuz"), sha256_file(served / "vmlinuz"))]
        refuse_lookups_but_local(monkeypatch)
        cfg = AgentConfig.from_dict(
            {
                "name": "host-fuzz",
                "token": TOKEN,
                "libvirt_uri": "test:///default",
                "storage_dir": str(root / "agent"),
                "bridge": {"name": "kvf0", "subnet": SUBNET},
            }
        )
        agent = Agent.build(cfg, SystemClock())
        agent.start()
        agent.hv.conn().defineXML(foreign_domain_xml(FOREIGN))
        app = create_app(agent)
        try:
            yield Env(app, TestClient(app), agent, files, images, boot)
        finally:
            agent.ops.shutdown()  # let every operation finish first
            for dom in agent.hv.owned():
                agent.hv.undefine(dom.name)
            with contextlib.suppress(libvirt.libvirtError):
                agent.hv.conn().lookupByName(FOREIGN).undefine()
            agent.stop()
            files.close()


def refuse_lookups_but_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only loopback (the file server) and the guest subnet (the agent's
    probes) resolve: a generated URL the mapper missed fails, not leaks."""
    real = socket.getaddrinfo
    guests = ipaddress.ip_network(SUBNET)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            address = ipaddress.ip_address(name)
            local = address.is_loopback or address in guests
        except ValueError:
            local = name == "localhost"
        if not local:
            raise socket.gaierror(socket.EAI_NONAME, f"fuzz test: no lookups of {name!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def spec(env: Env) -> dict[str, Any]:
    image = env.images[0]
    return {
        "image": {"reference": REFERENCE, "url": image.url, "sha256": image.sha256},
        "osProfile": {"computerName": "fz"},
        "dataDisks": [{"lun": 0, "diskSizeGB": 1}],
    }


def wait_operation(env: Env, op_id: str) -> None:
    clock = SystemClock()
    for _ in range(1000):
        op = env.agent.ops.get(op_id)
        if op is not None and op.status != "InProgress":
            return
        clock.sleep(0.01)
    raise AssertionError(f"operation {op_id} did not finish")


def ensure_known_instance(env: Env) -> None:
    """Before each operation: the known instance exists (an earlier operation
    may have deleted it) and nothing runs on it."""
    busy = env.agent.ops.busy_with(KNOWN_INSTANCE)
    if busy is not None:
        wait_operation(env, busy)
    if env.api.get(f"/v1/instances/{KNOWN_INSTANCE}", headers=AUTH).status_code == 404:
        r = env.api.put(f"/v1/instances/{KNOWN_INSTANCE}", json=spec(env), headers=AUTH)
        assert r.status_code == 202, r.text
        wait_operation(env, r.json()["id"])


def local_files(env: Env) -> CaseMapper:
    """Keep generated image specs on the machine, and make some of them valid.

    Every http(s) URL of an image, kernel or initrd is pointed at the file
    server: the real file with its sha256 or with the generated one, or a
    missing file. A URL that is not http(s) is sometimes kept, to be refused.
    Half of the time the whole image spec is replaced by one that passes
    validation (the real image, a wrong sha256 or a missing file), so the
    rest of the body is what gets fuzzed.
    """

    def served(choices: list[Served], draw: Draw) -> tuple[str, str | None]:
        file = draw(st.sampled_from(choices))
        how = draw(st.sampled_from(["real", "sha", "missing"]))
        if how == "missing":
            return env.files.url("missing"), None
        return file.url, file.sha256 if how == "real" else None

    def point(artifact: Any, choices: list[Served], draw: Draw) -> None:
        if not isinstance(artifact, dict) or not isinstance(artifact.get("url"), str):
            return
        if not artifact["url"].startswith(("http://", "https://")) and draw(st.booleans()):
            return
        artifact["url"], sha = served(choices, draw)
        if sha is not None:
            artifact["sha256"] = sha

    def mapper(case: FuzzCase, draw: Draw) -> None:
        body: Any = case.body
        image = body.get("image") if isinstance(body, dict) else None
        if not isinstance(image, dict):
            return
        if draw(st.booleans()):
            url, sha = served(env.images, draw)
            image.clear()
            image.update(reference=dict(REFERENCE), url=url, sha256=sha or "0" * 64)
            return
        point(image, env.images, draw)
        for part in ("kernel", "initrd"):
            point(image.get(part), env.boot_files, draw)

    return mapper


def record_operation(env: Env) -> Observer:
    def observe(_case: FuzzCase, response: schemathesis.Response) -> None:
        if response.status_code == 202:
            env.operations.add(operations.Operation.model_validate_json(response.content).id)

    return observe


def test_fuzz_agent_api(env: Env) -> None:
    ensure_known_instance(env)
    report = fuzz_app(
        env.app,
        token=TOKEN,
        examples=EXAMPLES_PER_MODE,
        mappers=(known_values(KNOWN), local_files(env)),
        observers=(record_operation(env),),
        before_operation=lambda: ensure_known_instance(env),
    )
    assert report.sent >= MIN_REQUESTS, report.summary()
    documented = {f"{m.upper()} {p}" for p, ops in env.app.openapi()["paths"].items() for m in ops}
    assert report.operations() == documented
    # operations were started, and none of them crashed
    assert len(env.operations) > 20, report.summary()
    env.agent.ops.shutdown()
    crashed = []
    for op_id in env.operations:
        op = env.agent.ops.get(op_id)
        assert op is not None and op.status != "InProgress", op
        if op.error is not None and op.error.code == "InternalError":
            crashed.append(f"{op.kind} of {op.instance}: {op.error.message}")
    assert not crashed, crashed
    assert env.agent.hv.state(FOREIGN) != "absent", "the fuzz removed a domain kvmss does not own"
    assert not env.agent.layout.instance_dir(FOREIGN).exists()
