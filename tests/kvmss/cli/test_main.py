"""The ``kvmss`` CLI against a real HTTP server on 127.0.0.1 that records
requests and answers canned API documents (a stand-in for the controller:
these tests are about what the CLI sends and prints)."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from click.testing import CliRunner, Result

from bench.scalesets import image_reference
from kvmss.base.clock import FakeClock
from kvmss.cli.main import main
from kvmss.cli.state import CliState
from kvmss.cli.vmsscmd import merge_patch_from_sets
from kvmss.client.api import ApiClient

TOKEN = "ctl-token-5f2e9a7c41d8"
AGENT_TOKEN = "agent-token-0b7d3e19aa42"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    doc: Any = None
    raw: bytes | None = None


class FakeController:
    """Answers each (method, path) with its replies in order, repeating the last."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def _next(self, method: str, path: str) -> Reply:
        with self._lock:
            replies = self.routes.get((method, path))
            if not replies:
                return Reply(404, {"error": {"code": "NotFound", "message": f"no {path}"}})
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                url = urlsplit(self.path)
                rec = Recorded(
                    method=self.command,
                    path=url.path,
                    query=parse_qs(url.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self._body(),
                )
                with fake._lock:
                    fake.requests.append(rec)
                reply = fake._next(self.command, url.path)
                payload = reply.raw
                if payload is None and reply.doc is not None:
                    payload = json.dumps(reply.doc).encode()
                self.send_response(reply.status)
                if payload:
                    ctype = "application/json" if reply.raw is None else "text/html"
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload or b"")))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def only(self) -> Recorded:
        assert len(self.requests) == 1, [(r.method, r.path) for r in self.requests]
        return self.requests[0]


@pytest.fixture
def api() -> Iterator[FakeController]:
    fake = FakeController()
    fake.start()
    yield fake
    fake.stop()


def run(
    api: FakeController,
    *args: str,
    clock: FakeClock | None = None,
    env: dict[str, str] | None = None,
    auth: Sequence[str] = ("--token", TOKEN),
) -> Result:
    result = CliRunner().invoke(
        main,
        ["--url", api.url, *auth, *args],
        obj=CliState(clock=clock or FakeClock()),
        env=env,
    )
    # Never a traceback, whatever happened; never the token.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert TOKEN not in result.output and AGENT_TOKEN not in result.output
    return result


def rows(output: str) -> list[list[str]]:
    """A rendered table's cells, split on runs of two or more spaces."""
    import re

    lines = output.strip().splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines]


# --- images ---------------------------------------------------------------------

MANIFEST = {
    "publisher": "kvmss",
    "offer": "tiny",
    "sku": "1",
    "version": "2.0.0",
    "sha256": "ab" * 32,
    "sizeBytes": 3 << 20,
    "virtualSizeBytes": 64 << 20,
    "publishedAt": "2024-05-01T10:00:00.000Z",
}


def test_image_publish_streams_the_exact_bytes_kernel_and_initrd_first(
    api: FakeController, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(os.urandom(3 << 20))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(100_000))
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(os.urandom(50_000))
    base = "/v1/images/kvmss/tiny/1/2.0.0"
    api.on("PUT", base + "/kernel", Reply(204))
    api.on("PUT", base + "/initrd", Reply(204))
    api.on("PUT", base, Reply(201, MANIFEST))
    cmdline = "console=ttyS0 root=/dev/vda rw"
    r = run(
        api,
        "image", "publish", "kvmss", "tiny", "1", "2.0.0",
        "--file", str(disk), "--kernel", str(kernel), "--initrd", str(initrd),
        "--cmdline", cmdline,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert [q.path for q in api.requests] == [base + "/kernel", base + "/initrd", base]
    for rec, f in zip(api.requests, (kernel, initrd, disk), strict=True):
        assert rec.method == "PUT"
        assert rec.body == f.read_bytes()
        assert rec.headers["content-type"] == "application/octet-stream"
        assert rec.headers["content-length"] == str(f.stat().st_size)
        assert rec.headers["authorization"] == f"Bearer {TOKEN}"
    assert api.requests[2].query == {"cmdline": [cmdline]}
    assert api.requests[0].query == {}
    assert "sha256" in r.stdout and "ab" * 32 in r.stdout
    assert "uploading" in r.stderr


def test_uploads_hand_the_transport_an_open_file_not_bytes(
    api: FakeController, tmp_path: Path
) -> None:
    seen: list[Any] = []

    class BodySpy(requests.adapters.HTTPAdapter):
        def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
            seen.append(request.body)

    session = requests.Session()
    session.mount("http://", BodySpy())
    f = tmp_path / "disk.qcow2"
    f.write_bytes(os.urandom(1 << 20))
    api.on("PUT", "/v1/images/a/b/c/1", Reply(201, MANIFEST))
    doc = ApiClient(api.url, TOKEN, session=session).upload("/v1/images/a/b/c/1", f)
    assert doc == MANIFEST
    assert hasattr(seen[0], "read") and not isinstance(seen[0], bytes | bytearray)
    assert seen[0].closed  # and closed once the call is done
    assert api.only().body == f.read_bytes()


@pytest.mark.parametrize(
    ("extra", "which"), [(["--initrd", "INITRD"], "--initrd"), (["--cmdline", "x"], "--cmdline")]
)
def test_boot_files_need_a_kernel_before_anything_is_sent(
    api: FakeController, tmp_path: Path, extra: list[str], which: str
) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"q")
    (tmp_path / "initrd").write_bytes(b"i")
    extra = [str(tmp_path / "initrd") if a == "INITRD" else a for a in extra]
    r = run(api, "image", "publish", "p", "o", "s", "1", "--file", str(disk), *extra)
    assert r.exit_code == 2
    assert f"{which}: needs --kernel" in r.output
    assert api.requests == []


def test_image_list_table_and_json(api: FakeController) -> None:
    doc = {
        "value": [
            {
                "publisher": "kvmss",
                "offer": "tiny",
                "sku": "1",
                "versions": ["1.0.0", "2.0.0"],
                "latest": "2.0.0",
            }
        ]
    }
    api.on("GET", "/v1/images", Reply(200, doc))
    r = run(api, "image", "list")
    assert r.exit_code == 0
    assert rows(r.stdout) == [
        ["PUBLISHER", "OFFER", "SKU", "LATEST", "VERSIONS"],
        ["---------", "-----", "---", "------", "--------"],
        ["kvmss", "tiny", "1", "2.0.0", "2"],
    ]
    r = run(api, "-o", "json", "image", "list")
    assert json.loads(r.stdout) == doc
    r = run(api, "image", "list", "-o", "json")  # az style: -o after the verb
    assert json.loads(r.stdout) == doc


def test_image_versions(api: FakeController) -> None:
    api.on("GET", "/v1/images/kvmss/tiny/1/versions", Reply(200, {"value": [MANIFEST]}))
    r = run(api, "image", "versions", "kvmss", "tiny", "1")
    assert r.exit_code == 0
    assert rows(r.stdout)[2] == [
        "2.0.0",
        "2024-05-01T10:00:00.000Z",
        "3.0 MiB",
        "64.0 MiB",
        "ab" * 8,
    ]


# --- hosts ----------------------------------------------------------------------


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


# --- scale sets -----------------------------------------------------------------

SCALE_SET = {
    "name": "web",
    "location": "local",
    "sku": {"name": "kvm", "capacity": 4},
    "properties": {
        "upgradePolicy": {
            "mode": "Rolling",
            "automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": True},
        },
        "virtualMachineProfile": {
            "storageProfile": {"imageReference": image_reference("kvmss", "tiny", "1")}
        },
        "provisioningState": "Succeeded",
    },
}


def test_vmss_create_puts_the_model_file(api: FakeController, tmp_path: Path) -> None:
    model = tmp_path / "model.json"
    model.write_text(json.dumps(SCALE_SET))
    api.on("PUT", "/v1/scaleSets/web", Reply(201, SCALE_SET))
    r = run(api, "vmss", "create", "web", "--file", str(model))
    assert r.exit_code == 0, r.output
    req = api.only()
    assert req.json() == SCALE_SET
    assert req.headers["content-type"] == "application/json"
    assert rows(r.stdout)[2] == ["web", "4", "kvmss:tiny:1:latest", "Rolling", "yes", "Succeeded"]


def test_vmss_create_rejects_a_file_that_is_not_json(api: FakeController, tmp_path: Path) -> None:
    model = tmp_path / "model.json"
    model.write_text('{"sku": ')
    r = run(api, "vmss", "create", "web", "--file", str(model))
    assert r.exit_code == 2
    assert "not JSON" in r.output and "line 1" in r.output
    assert api.requests == []


def test_vmss_update_sends_a_merge_patch(api: FakeController) -> None:
    api.on("PATCH", "/v1/scaleSets/web", Reply(200, SCALE_SET))
    r = run(
        api, "vmss", "update", "web",
        "--set", "properties.upgradePolicy.mode=Rolling",
        "--set", "sku.capacity=6",
        "--set", "properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent=25",
        "--set", "tags=null",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    req = api.only()
    assert req.headers["content-type"] == "application/merge-patch+json"
    assert req.json() == {
        "properties": {
            "upgradePolicy": {
                "mode": "Rolling",
                "rollingUpgradePolicy": {"maxBatchInstancePercent": 25},
            }
        },
        "sku": {"capacity": 6},
        "tags": None,
    }


def test_set_values_are_json_when_they_parse_else_text() -> None:
    assert merge_patch_from_sets(["a.b=1"]) == {"a": {"b": 1}}
    assert merge_patch_from_sets(["x=null"]) == {"x": None}
    assert merge_patch_from_sets(["y=text"]) == {"y": "text"}
    assert merge_patch_from_sets(["y=true", "z=1.5", "w=[1,2]"]) == {
        "y": True,
        "z": 1.5,
        "w": [1, 2],
    }
    assert merge_patch_from_sets(['o={"k": "v"}', "o.n=2"]) == {"o": {"k": "v", "n": 2}}
    assert merge_patch_from_sets(['s="42"', "t=01", "u=", "v=NaN", "e=a=b"]) == {
        "s": "42",
        "t": "01",
        "u": "",
        "v": "NaN",
        "e": "a=b",
    }


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["novalue"], "novalue: expected path=value"),
        (["a..b=1"], "a..b: the path has an empty name"),
        (["=1"], "(empty): the path has an empty name"),
        (["a=1", "a.b=2"], "a.b: a is already set to a value"),
        (["a.b=1", "a.b=2"], "a.b: set more than once"),
    ],
)
def test_bad_set_is_a_usage_error(api: FakeController, sets: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        merge_patch_from_sets(sets)
    args = [a for s in sets for a in ("--set", s)]
    r = run(api, "vmss", "update", "web", *args)
    assert r.exit_code == 2
    assert message in r.output
    assert api.requests == []


def test_set_errors_never_show_the_value(api: FakeController) -> None:
    r = run(
        api, "vmss", "update", "web",
        "--set", "properties.virtualMachineProfile.osProfile.customData=c2VjcmV0LXZhbHVl",
        "--set", "properties.virtualMachineProfile.osProfile.customData=c2VjcmV0LXZhbHVl",
    )  # fmt: skip
    assert r.exit_code == 2
    assert "set more than once" in r.output
    assert "c2VjcmV0LXZhbHVl" not in r.output


def test_vmss_show_list_delete(api: FakeController) -> None:
    api.on("GET", "/v1/scaleSets/web", Reply(200, SCALE_SET))
    api.on("GET", "/v1/scaleSets", Reply(200, {"value": [SCALE_SET, {"name": "db"}]}))
    api.on("DELETE", "/v1/scaleSets/web", Reply(202))
    api.on("GET", "/v1/scaleSets/a%20b", Reply(200, {"name": "a b"}))

    r = run(api, "vmss", "show", "web")
    assert r.exit_code == 0
    assert ["properties.upgradePolicy.mode", "Rolling"] in rows(r.stdout)
    assert ["sku.capacity", "4"] in rows(r.stdout)

    r = run(api, "vmss", "list")
    assert rows(r.stdout)[2:] == [
        ["web", "4", "kvmss:tiny:1:latest", "Rolling", "yes", "Succeeded"],
        ["db", "-", "-", "-", "no", "-"],
    ]
    r = run(api, "vmss", "delete", "web")
    assert r.exit_code == 0 and r.stdout == ""
    assert (api.requests[-1].method, api.requests[-1].path) == ("DELETE", "/v1/scaleSets/web")

    r = run(api, "vmss", "show", "a b")  # a name never adds a path level
    assert r.exit_code == 0
    assert api.requests[-1].path == "/v1/scaleSets/a%20b"


def test_vmss_list_instances_table(api: FakeController) -> None:
    views = [
        {
            "instanceId": "0",
            "name": "web-0",
            "host": "host1",
            "updateDomain": 0,
            "faultDomain": 0,
            "imageVersion": "2.0.0",
            "powerState": "Running",
            "health": "Healthy",
            "healthReasons": [],
            "extensions": [{"name": "app", "status": "Succeeded", "exitCode": 0}],
        },
        {
            "instanceId": "1",
            "name": "web-1",
            "host": "host2",
            "updateDomain": 1,
            "faultDomain": 1,
            "imageVersion": None,
            "powerState": "Stopped",
            "health": "Unhealthy",
            "healthReasons": ["not running"],
            "extensions": [],
        },
    ]
    api.on("GET", "/v1/scaleSets/web/virtualMachines", Reply(200, {"value": views}))
    r = run(api, "vmss", "list-instances", "web")
    assert r.exit_code == 0
    assert rows(r.stdout) == [
        ["INSTANCE", "HOST", "UD", "FD", "VERSION", "POWER", "HEALTH"],
        ["--------", "-----", "--", "--", "-------", "-------", "-" * 23],
        ["0", "host1", "0", "0", "2.0.0", "Running", "Healthy"],
        ["1", "host2", "1", "1", "-", "Stopped", "Unhealthy (not running)"],
    ]


def test_history_table(api: FakeController) -> None:
    entry = {
        "properties": {
            "runningStatus": {
                "code": "Faulted",
                "startTime": "2024-05-01T10:00:00.000Z",
                "endTime": "2024-05-01T10:07:00.000Z",
            },
            "progress": {
                "successfulInstanceCount": 2,
                "failedInstanceCount": 1,
                "inProgressInstanceCount": 0,
                "pendingInstanceCount": 1,
            },
            "error": {"code": "Faulted", "message": "x"},
            "startedBy": "Platform",
            "targetImageReference": {
                "publisher": "kvmss",
                "offer": "tiny",
                "sku": "1",
                "version": "2.0.0",
            },
            "rollbackInfo": {
                "successfullyRolledbackInstanceCount": 1,
                "failedRolledbackInstanceCount": 0,
                "rollbackError": None,
            },
        },
        "type": "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades",
        "location": "local",
    }
    api.on("GET", "/v1/scaleSets/web/osUpgradeHistory", Reply(200, {"value": [entry]}))
    r = run(api, "vmss", "get-os-upgrade-history", "web")
    assert r.exit_code == 0
    table = rows(r.stdout)
    assert table[0] == [
        "START", "END", "CODE", "STARTED BY", "TARGET", "SUCCEEDED", "FAILED", "ROLLED BACK",
    ]  # fmt: skip
    assert table[2] == [
        "2024-05-01T10:00:00.000Z", "2024-05-01T10:07:00.000Z", "Faulted", "Platform",
        "kvmss:tiny:1:2.0.0", "2", "1", "1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("verb", "action"), [("manual-upgrade", "manualUpgrade"), ("reimage", "reimage")]
)
def test_instance_actions_send_the_ids(api: FakeController, verb: str, action: str) -> None:
    api.on("POST", f"/v1/scaleSets/web/{action}", Reply(202))
    r = run(api, "vmss", verb, "web", "--instance-ids", "0", "1", "2")
    assert r.exit_code == 0, r.output
    assert api.only().json() == {"instanceIds": ["0", "1", "2"]}
    assert "0, 1, 2" in r.stdout
    r = run(api, "vmss", verb, "web", "--instance-ids", "3,4", "--instance-ids", "5")
    assert api.requests[-1].json() == {"instanceIds": ["3", "4", "5"]}
    r = run(api, "vmss", verb, "web")
    assert r.exit_code == 2 and "--instance-ids" in r.output


def test_plan_prints_batches_in_order(api: FakeController) -> None:
    plan = {
        "targetImageReference": {
            "publisher": "kvmss",
            "offer": "tiny",
            "sku": "1",
            "version": "2.0.0",
        },
        "batchSize": 2,
        "batches": [["3", "0"], ["1", "4"], ["2"]],
    }
    api.on("GET", "/v1/scaleSets/web/rollingUpgrades/plan", Reply(200, plan))
    r = run(api, "vmss", "plan", "web")
    assert r.exit_code == 0
    assert r.stdout.splitlines() == [
        "target kvmss:tiny:1:2.0.0, batch size 2, 3 batches",
        "batch 1: 3, 0",
        "batch 2: 1, 4",
        "batch 3: 2",
    ]
    plan["batches"] = []
    api.on("GET", "/v1/scaleSets/web/rollingUpgrades/plan", Reply(200, plan))
    r = run(api, "vmss", "plan", "web")
    assert r.stdout.strip() == "nothing to upgrade: every instance runs kvmss:tiny:1:2.0.0"
