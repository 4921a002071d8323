"""``kvmss image``: publishing streams the files, tables and JSON of the catalog
(against the stand-in controller of tests.kvmss.cli.fakecontroller)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import requests

from kvmss.client.api import ApiClient
from tests.kvmss.cli.fakecontroller import TOKEN, FakeController, Reply, rows, run

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
