"""What the benchmarks and the tests both serve locally: a real HTTP file
server on 127.0.0.1 (the way the controller serves image blobs), free loopback
ports, the image spec of a built tiny image served by it, and a scratch
directory libvirt's QEMU user can traverse."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hostagent.contract import instancespec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FileServer:
    """Serves a directory over HTTP on 127.0.0.1 and counts GETs per path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *_a: object) -> None:
                return

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        port = self.httpd.server_address[1]
        return f"http://127.0.0.1:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def tiny_image_spec(base_url: str, version: str, manifest_dir: Path) -> instancespec.ImageSpec:
    """The ImageSpec of a built tiny image served at ``base_url`` (which serves
    the parent directory of ``manifest_dir``)."""
    m: dict[str, Any] = json.loads((manifest_dir / "manifest.json").read_text())
    rel = manifest_dir.name

    def art(key: str) -> instancespec.Artifact:
        return instancespec.Artifact(
            url=f"{base_url}/{rel}/{m[key]['file']}", sha256=m[key]["sha256"]
        )

    disk = art("disk")
    return instancespec.ImageSpec(
        reference=instancespec.ImageReference(
            publisher="kvmss", offer="tiny", sku="1", version=version
        ),
        url=disk.url,
        sha256=disk.sha256,
        kernel=art("kernel"),
        initrd=art("initrd"),
        cmdline=m["cmdline"],
    )


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A directory under /var/tmp that libvirt's QEMU user can traverse,
    removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=f"kvmss-{prefix}-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
